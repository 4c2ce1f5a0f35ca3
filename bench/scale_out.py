"""Scale-out: HTTP sign-up throughput and p99 with 1, 2 and 4 service processes on one database,
and how much of each sign-up is the database's time.

    python bench/scale_out.py [--processes 1,2,4] [--requests N] [--activities M]
                              [--capacity C] [--concurrency K]

For each process count P: a fresh embedded database (in memory) started by the bench, the
service on it as an operator runs it (`python -m server --processes P`, all on one port with
SO_REUSEPORT; P = 1 is the ordinary single process), M published activities of capacity C and N
volunteers with access tokens prepared straight through the domain code (bench/signup_burst.py's
`populate`), a warm-up burst, then the N sign-ups with K in flight on keep-alive connections,
each volunteer to one activity, round-robin. CPU time is read from /proc for the database, the
service processes (the supervisor's included) and the bench. Then, as the ceiling no number of
service processes can pass, the sign-up's database primitives alone, straight through the driver
on a fresh database (signup_burst's raw phase). One JSON line per run:

    {"bench": "scale_out", "processes", "requests", "rps", "p50_ms", "p99_ms", "ratio",
     "p99_ratio", "db_cpu_ms", "service_cpu_ms", "db_busy", "db_share", "db_ops", "db_writes",
     "oversold"}
    {"bench": "scale_out", "processes": 0, "phase": "db_only", "rps", "db_cpu_ms", "db_busy"}

`ratio` = rps ÷ the 1-process rps of the same run, `p99_ratio` likewise; `db_cpu_ms` and
`service_cpu_ms` = CPU milliseconds per sign-up of the database and of all service processes;
`db_busy` = the database's CPU seconds ÷ wall seconds (SecantusDB serves from one interpreter:
near 1.0 it is the bottleneck, whatever the service does); `db_share` = the database's part of
the CPU a sign-up costs on the server side; `db_ops` and `db_writes` = the database's operations
(serverStatus opcounters; writes: insert + update + delete) per sign-up. Progress goes to
stderr; the exit status is 1 when a sign-up failed or an activity was oversold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from _support import (  # noqa: E402
    KeepAlivePool,
    Service,
    audit,
    cpu_seconds,
    percentile,
)
from _support import say as _say  # noqa: E402
from signup_burst import (  # noqa: E402
    db_ops,
    http_burst,
    open_context,
    populate,
    raw_burst,
    round_robin,
)

from server.db.embedded import EmbeddedDatabase  # noqa: E402
from server.logs import configure_logging  # noqa: E402
from server.wechat.emulator import start_emulator  # noqa: E402


def say(*parts: object) -> None:
    _say("scale_out", *parts)


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                kids = [int(p) for p in (task / "children").read_text().split()]
                found += kids
                todo += kids
    return found


class Cluster(Service):
    """`python -m server --processes P` on the bench's database, with its emulator."""

    def __init__(self, uri: str, db_name: str, processes: int, data_dir: Path) -> None:
        data_dir.mkdir(parents=True)
        super().__init__(uri, db_name, data_dir, IKEPU_PROCESSES=str(processes))
        self.processes = processes

    def service_pids(self) -> list[int]:
        return [self.proc.pid, *descendants(self.proc.pid)]

    def listening(self) -> int:
        """Sockets listening on the port (/proc/net/tcp, state 0A): one per service process."""
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
        return sum(
            1 for row in rows
            if row.split()[3] == "0A" and int(row.split()[1].split(":")[1], 16) == self.port
        )  # fmt: skip

    async def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Every service process up: healthy, and P sockets listening on the port."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with httpx.AsyncClient(timeout=1) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the service exited: {self.log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    healthy = (await client.get(self.url + "/healthz")).status_code == 200
                    if healthy and self.listening() == self.processes:
                        return
                if loop.time() > deadline:
                    raise RuntimeError("the service did not become ready")
                await asyncio.sleep(0.2)


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds({str(p): p for p in pids}).values())


async def one_run(args, processes: int, scratch: Path) -> dict:
    database = EmbeddedDatabase(":memory:")
    uri = await database.start()
    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    cluster = Cluster(uri, db_name, processes, scratch / f"p{processes}")
    ctx = None
    try:
        await cluster.wait_ready()
        ctx = await open_context(uri, db_name, cluster.emulator_port, scratch / f"c{processes}")
        warm, acts, warm_people, people = await populate(
            ctx, f"p{processes}", args.requests, args.activities, args.capacity
        )
        pool = KeepAlivePool(cluster.url)
        try:
            await http_burst(pool.post, round_robin(warm, warm_people), args.concurrency)
            service = cluster.service_pids()
            ops_before = await db_ops(ctx)
            db_before, service_before = _cpu([database.pid]), _cpu(service)
            answers, latencies, wall = await http_burst(
                pool.post, round_robin(acts, people), args.concurrency
            )
            db_cpu, service_cpu = _cpu([database.pid]) - db_before, _cpu(service) - service_before
            ops = {k: v - ops_before.get(k, 0) for k, v in (await db_ops(ctx)).items()}
        finally:
            await pool.close()
        failed = [a for a in answers if a[0] not in (200, 201)]
        for code, body in failed[:3]:
            say(f"failed sign-up: {code} {body}")
        _, oversold, problems = await audit(ctx, acts, args.capacity)
        for problem in problems:
            say(f"check failed: {problem}")
        n = args.requests
        say(f"{processes} process(es): {n} sign-ups in {wall:.2f}s, {len(failed)} failed; "
            f"cpu database {db_cpu:.2f}s, service {service_cpu:.2f}s")  # fmt: skip
        return {
            "bench": "scale_out",
            "processes": processes,
            "requests": n,
            "rps": round(n / wall, 1),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "db_cpu_ms": round(db_cpu / n * 1000, 2),
            "service_cpu_ms": round(service_cpu / n * 1000, 2),
            "db_busy": round(db_cpu / wall, 2),
            "db_share": round(db_cpu / (db_cpu + service_cpu), 2) if db_cpu + service_cpu else 0,
            "db_ops": round(sum(ops.values()) / n, 2),
            "db_writes": round(sum(ops.get(k, 0) for k in ("insert", "update", "delete")) / n, 2),
            "oversold": oversold,
            "failed": len(failed) + len(problems),
        }
    finally:
        if ctx is not None:
            await ctx.close()
        await cluster.stop(timeout_s=30)
        await database.stop()


async def db_only(args, scratch: Path) -> dict:
    """The sign-up's database primitives alone, straight through the driver, K in flight."""
    database = EmbeddedDatabase(":memory:")
    uri = await database.start()
    emulator, _, port = start_emulator()  # publishing checks the text at WeChat
    ctx = await open_context(uri, f"bench_{uuid.uuid4().hex[:8]}", port, scratch / "raw")
    try:
        warm, acts, warm_people, people = await populate(
            ctx, "raw", args.requests, args.activities, args.capacity
        )
        await raw_burst(ctx, round_robin(warm, warm_people), args.concurrency)
        before = _cpu([database.pid])
        _, wall = await raw_burst(ctx, round_robin(acts, people), args.concurrency)
        db_cpu = _cpu([database.pid]) - before
        return {
            "bench": "scale_out",
            "processes": 0,
            "phase": "db_only",
            "requests": args.requests,
            "rps": round(args.requests / wall, 1),
            "db_cpu_ms": round(db_cpu / args.requests * 1000, 2),
            "db_busy": round(db_cpu / wall, 2),
        }
    finally:
        await ctx.close()
        emulator.stop()
        await database.stop()


async def run(args) -> int:
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    counts = [int(p) for p in args.processes.split(",")]
    status = 0
    base: dict | None = None
    with tempfile.TemporaryDirectory(prefix="ikepu-scale-") as scratch:
        for processes in counts:
            line = await one_run(args, processes, Path(scratch))
            base = base or line
            line["ratio"] = round(line["rps"] / base["rps"], 2)
            line["p99_ratio"] = round(line["p99_ms"] / base["p99_ms"], 2)
            status |= bool(line.pop("failed") or line["oversold"])
            print(json.dumps(line), flush=True)
            await asyncio.sleep(1)
        print(json.dumps(await db_only(args, Path(scratch))), flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2,4", help="process counts, the first the base")
    parser.add_argument("--requests", type=int, default=2000, help="sign-ups per run (N)")
    parser.add_argument("--activities", type=int, default=20, help="activities (M)")
    parser.add_argument("--capacity", type=int, default=50, help="seats per activity (C)")
    parser.add_argument("--concurrency", type=int, default=128, help="requests in flight (K)")
    args = parser.parse_args(argv)
    configure_logging("auto", "warning", stream=sys.stderr)
    try:
        return asyncio.run(run(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        say("interrupted; the services and databases are stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
