"""Several service processes on one database: the parent that starts them and keeps them up.

`python -m server --processes N` (or `IKEPU_PROCESSES=N`, N > 1) runs this supervisor instead of
serving in its own process. It starts what there must be one of: the embedded database (when
no `IKEPU_MONGODB_URI` is set), the WeChat emulator (without a real appid; started by
server/__main__.py), the directory the processes' metrics add up in (server/metrics.py); then N
service processes (`python -m server worker`), each a fresh interpreter with its own event
loop, connection pool, scheduler, solver pool and caches.

- Listening. "shared" (`IKEPU_PROCESS_PORTS`, the default): each process binds `IKEPU_PORT`
  itself with SO_REUSEPORT, and the kernel spreads new connections over them; "each": process
  i listens on `IKEPU_PORT + i`, for a proxy in front (an nginx `upstream` of N servers). The
  supervisor holds no socket of theirs, and they none of its (the emulator's, the database's):
  a process is started with `close_fds` and given only the write end of its readiness pipe.
- Start. Process 0 starts first and alone: it creates the keys, the indexes, runs the data
  migrations and loads the demo; the others, started once it is ready, find them done. A
  process that dies before it is first ready stops the service with exit code 1 (a port in use,
  a bad setting: not a crash that a restart would cure).
- Staying up. A process that dies later is started again with the same index (and port), at
  once the first time and after a growing pause while it keeps dying within STEADY_S of its
  start. The database, if embedded, is restarted by its own supervision (server/db/embedded.py).
- Dying with it. Each process asks the kernel for SIGKILL when the supervisor dies (the
  parent-death signal of server/processes.py), so a supervisor killed with SIGKILL leaves none
  behind; it runs in a session of its own, so a Ctrl-C at the terminal reaches the supervisor
  only, which decides.
- Stop. SIGTERM or SIGINT: the supervisor stops restarting, passes SIGTERM on to every process
  (each stops listening and finishes its requests within `IKEPU_SHUTDOWN_GRACE_S`), kills any
  still running KILL_MARGIN_S after that, and only then stops the database.

What must happen once happens once whichever process it falls to, through MongoDB: the
scheduler's lease (reminders, daily jobs), the WeChat token's refresh lease, a plan's solve
lease, each reminder's claim; seats are compare-and-sets, and the repair at start, which every
process runs as it starts, changes an activity only by a compare-and-set on what it read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import structlog

from config import Settings
from server import metrics
from server.db import EmbeddedDatabase
from server.processes import die_with_parent

log = structlog.get_logger("ikepu.supervisor")

RESTART_DELAYS_S = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
STEADY_S = 30.0
"""A process up this long has recovered: its next death is restarted at once again."""
KILL_MARGIN_S = 5.0
"""Beyond the shutdown grace, what a process gets to close before it is killed."""
READY = b"ready\n"


@dataclass(frozen=True)
class Worker:
    """A service process's own side: which one it is, and the pipe it says "ready" on."""

    index: int
    ready_fd: int

    def port(self, settings: Settings) -> int:
        return settings.port + (self.index if settings.process_ports == "each" else 0)

    def reuse_port(self, settings: Settings) -> bool:
        return settings.process_ports == "shared"

    def ready(self) -> None:
        """Listening, scheduler started: tell the supervisor (it reads to the pipe's end)."""
        os.write(self.ready_fd, READY)
        os.close(self.ready_fd)


@dataclass
class _Child:
    index: int
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    failures: int = 0  # deaths in a row, each within STEADY_S of its start


class Supervisor:
    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        self.settings = settings
        self.env = {
            **os.environ,
            **env,
            "IKEPU_PROCESSES": str(settings.processes),
            "IKEPU_PROCESS_PORTS": settings.process_ports,
        }
        self.children = [_Child(i) for i in range(settings.processes)]
        self._stopping = asyncio.Event()

    async def run(self, on_ready=None) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        embedded = await self._start_database()
        metrics_dir = Path(self.settings.data_dir) / "metrics"
        self.env.update(metrics.prepare_shared(metrics_dir))
        keepers: list[asyncio.Task] = []
        try:
            if not await self._start_all():
                return 0 if self._stopping.is_set() else 1
            ports = sorted({Worker(c.index, -1).port(self.settings) for c in self.children})
            log.info(
                "listening",
                url=f"http://{self.settings.host}:{ports[0]}/",
                ports=ports,
                processes=len(self.children),
                pids=[c.proc.pid for c in self.children],
            )
            if on_ready is not None:
                on_ready()
            keepers = [loop.create_task(self._keep(c, metrics_dir)) for c in self.children]
            await self._stopping.wait()
            log.info("stopping", processes=len(self.children))
            return 0
        finally:
            self._stopping.set()
            await self._stop_children(keepers)
            if embedded is not None:
                await embedded.stop()
            log.info("stopped")

    async def _start_database(self) -> EmbeddedDatabase | None:
        if self.settings.mongodb_uri:
            return None
        data_dir = Path(self.settings.data_dir)
        embedded = EmbeddedDatabase(
            str(data_dir / "db"),
            host="127.0.0.1",
            port=self.settings.embedded_db_port,
            test_commands=self.settings.embedded_db_test_commands,
            log_path=str(data_dir / "secantusd.log"),
        )
        self.env["IKEPU_MONGODB_URI"] = await embedded.start()
        embedded.supervise()
        return embedded

    async def _start_all(self) -> bool:
        """Process 0 first (keys, indexes, migrations, demo), then the rest together."""
        first, *rest = self.children
        if not await self._start(first):
            return False
        return all(await asyncio.gather(*(self._start(c) for c in rest)))

    async def _start(self, child: _Child) -> bool:
        """Start the child's process; True once it says it serves, False if it died first
        (or the service is stopping)."""
        read_end, write_end = os.pipe()
        try:
            parent = os.getpid()
            child.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server", "worker",
                "--index", str(child.index), "--ready-fd", str(write_end),
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(write_end,),
                preexec_fn=lambda: die_with_parent(parent),  # between fork and exec
                start_new_session=True,
            )  # fmt: skip
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        child.started_at = asyncio.get_running_loop().time()
        log.info("worker_started", index=child.index, pid=child.proc.pid)
        ready = asyncio.ensure_future(_read_ready(read_end))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((ready, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            answered = ready.done()
            if not answered:
                ready.cancel()
        if not answered:  # the service is stopping
            return False
        if not ready.result():
            log.error("worker_failed_to_start", index=child.index, pid=child.proc.pid)
            return False
        log.info("worker_ready", index=child.index, pid=child.proc.pid)
        return True

    async def _keep(self, child: _Child, metrics_dir: Path) -> None:
        """Start the child again whenever it dies, until the service stops."""
        loop = asyncio.get_running_loop()
        while True:
            proc = child.proc
            code = await proc.wait()
            metrics.process_gone(metrics_dir, proc.pid)
            if self._stopping.is_set():
                return
            up_s = loop.time() - child.started_at
            child.failures = 0 if up_s >= STEADY_S else child.failures + 1
            delay = RESTART_DELAYS_S[min(child.failures, len(RESTART_DELAYS_S) - 1)]
            log.error(
                "worker_exited", index=child.index, pid=proc.pid, returncode=code,
                up_s=round(up_s, 1), restart_in_s=delay,
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            if await self._start(child):
                log.warning("worker_restarted", index=child.index, pid=child.proc.pid)

    async def _stop_children(self, keepers: list[asyncio.Task]) -> None:
        # No more restarts first; a process being started as a keeper is cancelled is killed
        # by asyncio, and one started already is in `children`, stopped below.
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        running = [c.proc for c in self.children if c.proc and c.proc.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(proc.wait()) for proc in running]
        if not waits:
            return
        await asyncio.wait(waits, timeout=self.settings.shutdown_grace_s + KILL_MARGIN_S)
        for proc in running:
            if proc.returncode is None:
                log.warning("worker_killed_at_stop", pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await asyncio.gather(*waits)


async def _read_ready(read_end: int) -> bool:
    """Whether the process wrote "ready" before its end of the pipe closed (it died)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(read_end, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        return await reader.readline() == READY
    finally:
        transport.close()
