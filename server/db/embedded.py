"""The embedded database: SecantusDB run as a child process (never imported: it is GPL-2.0).

The child must never outlive the service, even when the service is killed with SIGKILL: the
kernel's parent-death signal (Linux, the platform ikepu runs on) ends it with us. While the
service runs, the child is supervised: if it dies, its exit is logged and it is started again,
with backoff, on the same port and data directory, so the driver reconnects and calls recover
without restarting the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import structlog
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from server.processes import die_with_parent

log = structlog.get_logger(__name__)

RESTART_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class EmbeddedDatabaseError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _launcher() -> str:
    beside = Path(sys.executable).with_name("secantusd-py")
    found = str(beside) if beside.exists() else shutil.which("secantusd-py")
    if not found:
        raise EmbeddedDatabaseError("secantusd-py not found: run `make install`")
    return found


class EmbeddedDatabase:
    """One secantusd-py child process on a loopback port."""

    def __init__(
        self,
        storage_path: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        test_commands: bool = False,
        log_path: str | None = None,
    ) -> None:
        self.storage_path = storage_path
        self.host = host
        self.port = port or free_port(host)
        self.test_commands = test_commands
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.restarting = False
        self._supervisor: asyncio.Task | None = None

    @property
    def uri(self) -> str:
        # No retryable writes: the embedded server scans its registry of them on every such
        # write, so it slows down as it serves them (1,482 → 166 inserts/s after 14,000), and a
        # single node on loopback gains little from a retry. A configured MongoDB keeps them.
        # The server drops connections idle for 300 s, and with no retry the next write on one
        # fails, so the pool retires them first.
        return (
            f"mongodb://{self.host}:{self.port}/"
            "?directConnection=true&retryWrites=false&maxIdleTimeMS=240000"
        )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _prepare_files(self):
        """Startup only: the storage folder and the log file the child writes to."""
        if self.storage_path != ":memory:":
            Path(self.storage_path).mkdir(parents=True, exist_ok=True)
        return open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL

    async def start(self, timeout_s: float = 30.0) -> str:
        args = [
            "--host", self.host,
            "--port", str(self.port),
            "--storage-path", self.storage_path,
            "--sync-on-commit",
            "--log-level", "WARNING",
        ]  # fmt: skip
        if self.test_commands:
            args.append("--enable-test-commands")
        out = self._prepare_files()
        parent = os.getpid()
        try:
            self.process = await asyncio.create_subprocess_exec(
                _launcher(),
                *args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=lambda: die_with_parent(parent),  # between fork and exec
                start_new_session=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        log.info("embedded_db_starting", pid=self.process.pid, port=self.port)
        await self._wait_until_ready(timeout_s)
        return self.uri

    async def _wait_until_ready(self, timeout_s: float) -> None:
        client = AsyncMongoClient(self.uri, serverSelectionTimeoutMS=500)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while True:
                if self.process.returncode is not None:
                    raise EmbeddedDatabaseError(
                        f"secantusd-py exited with {self.process.returncode} "
                        f"(storage {self.storage_path}; see {self.log_path or 'its output'})"
                    )
                with contextlib.suppress(PyMongoError):
                    await client.admin.command("ping")
                    return
                if loop.time() > deadline:
                    raise EmbeddedDatabaseError(f"secantusd-py did not answer within {timeout_s}s")
                await asyncio.sleep(0.1)
        finally:
            await client.close()

    def supervise(self) -> None:
        """Restart the child whenever it dies until `stop`: same port, same data directory."""
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            proc = self.process
            code = await proc.wait()
            self.restarting = True
            log.error(
                "embedded_db_exited", pid=proc.pid, returncode=code, storage=self.storage_path
            )
            for attempt, delay in enumerate(_delays(), start=1):
                await asyncio.sleep(delay)
                try:
                    await self.start()
                except (EmbeddedDatabaseError, OSError) as exc:
                    log.error("embedded_db_restart_failed", attempt=attempt, error=str(exc))
                    continue
                log.warning("embedded_db_restarted", pid=self.process.pid, attempt=attempt)
                break
            self.restarting = False

    async def stop(self, timeout_s: float = 10.0) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        proc, self.process = self.process, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.info("embedded_db_stopped", pid=proc.pid, returncode=proc.returncode)


def _delays():
    """How long to wait before each restart: growing, then every 30 s for as long as it takes."""
    yield from RESTART_DELAYS_S
    while True:
        yield RESTART_DELAYS_S[-1]
