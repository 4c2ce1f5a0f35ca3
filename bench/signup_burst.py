"""Sign-up burst: N concurrent HTTP sign-ups through the running service for M activities.

    python bench/signup_burst.py [--requests N] [--activities M] [--capacity C]
                                 [--concurrency K] [--client streams|httpx]

Starts the service as its own process (`python -m server`, with its WeChat emulator) on an
embedded database (in memory), prepares an organisation, M published activities of capacity C
(waitlist on) and N volunteers with access tokens straight through the domain code, then sends the
N sign-ups at once (K in flight), each volunteer to one activity, round-robin. The baseline, in the
same run: the same atomic reservation straight through the driver (the conditional seat update,
the waitlist update when full, the insert of the record), same N, M, C and K, on fresh activities
and volunteers. Each phase is timed after a warm-up of 100 on an activity of its own. Prints one
JSON line:

    {"bench": "signup_burst", "requests", "confirmed", "oversold", "p50_ms", "p99_ms", "rps",
     "raw_rps", "ratio"}

`oversold` counts confirmed records beyond capacity, read back from the database; `ratio` is
rps / raw_rps. Progress, CPU per process and database operations per request go to stderr; the
exit status is 1 when a sign-up failed, an activity was oversold, or an activity's counters
disagree with its records.

Each phase has a fresh database server of its own, started alike and prepared alike: SecantusDB
gets slower with the writes it has served, so a phase run second on a shared server would be
penalised. The HTTP client is a minimal keep-alive client over asyncio streams: httpx costs several
milliseconds of CPU per request at 200 connections, more than the service spends, and the client
shares the machine with the service and the database (`--client httpx` to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from _support import KEY, bench_settings, start_context  # noqa: E402
from bson import ObjectId  # noqa: E402
from pymongo import ReturnDocument  # noqa: E402

from server.context import Context  # noqa: E402
from server.db.embedded import EmbeddedDatabase, free_port  # noqa: E402
from server.domain import activities, identity, orgs, signups  # noqa: E402
from server.logs import configure_logging  # noqa: E402

WARMUP = 100
SETUP_CONCURRENCY = 50


def say(*parts: object) -> None:
    print("signup_burst:", *parts, file=sys.stderr, flush=True)


# -- the service process ----------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """In the child between fork and exec: the service must not outlive the bench."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)


class Service:
    def __init__(self, uri: str, db_name: str, data_dir: Path) -> None:
        self.port = free_port()
        self.emulator_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "service.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("IKEPU_")}
        env.update(
            IKEPU_MONGODB_URI=uri,
            IKEPU_MONGODB_DB=db_name,
            IKEPU_PORT=str(self.port),
            IKEPU_WECHAT_EMULATOR_PORT=str(self.emulator_port),
            IKEPU_SECRET_KEY=KEY,  # the same keys as the bench's own contexts
            IKEPU_DATA_KEY=KEY,
            IKEPU_LOG_LEVEL="warning",
            IKEPU_LOG_FORMAT="json",
            IKEPU_DATA_DIR=str(data_dir / "var"),
        )
        parent = os.getpid()
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: _die_with_parent(parent),
            )

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def wait_healthy(self, timeout_s: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with httpx.AsyncClient(timeout=1) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the service exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + "/healthz")).status_code == 200:
                        return
                if loop.time() > deadline:
                    raise RuntimeError(f"the service did not answer /healthz:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    async def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            say("the service did not stop on SIGTERM; killing it")
            self.proc.kill()
            self.proc.wait()


# -- preparation, straight through the domain code --------------------------------------------


async def bounded(coros, limit: int) -> list:
    gate = asyncio.Semaphore(limit)

    async def one(coro):
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def make_activities(ctx, team: ObjectId, creator: ObjectId, count: int, capacity: int):
    start = ctx.clock.now() + timedelta(days=2)
    ids = []
    for i in range(count):
        new = activities.NewActivity(
            title=f"走进科技馆 {i}",
            description="带领小学生参观科技馆",
            org_id=str(team),
            starts_at=start + timedelta(hours=4 * i),
            ends_at=start + timedelta(hours=4 * i + 3),
            capacity=capacity,
            waitlist=True,
        )
        activity_id = await activities.create_activity(ctx, new, created_by=creator)
        await activities.publish(ctx, activity_id, publisher_openid="o_bench_organiser")
        ids.append(activity_id)
    return ids


async def make_volunteers(ctx, prefix: str, count: int) -> list[tuple[ObjectId, str]]:
    openids = [f"o_{prefix}_{i}" for i in range(count)]
    user_ids = await bounded((identity.ensure_user(ctx, o) for o in openids), SETUP_CONCURRENCY)
    return [
        (u, identity.issue_access_token(ctx, u, o)[0])
        for u, o in zip(user_ids, openids, strict=True)
    ]


def round_robin(activity_ids: list[ObjectId], people: list) -> list[tuple[ObjectId, object]]:
    return [(activity_ids[i % len(activity_ids)], p) for i, p in enumerate(people)]


# -- the HTTP phase ---------------------------------------------------------------------------


class KeepAlivePool:
    """A minimal HTTP/1.1 client: keep-alive connections over asyncio streams, one per request in
    flight. It costs tens of microseconds per request where httpx's pool costs milliseconds at
    hundreds of connections, and the client shares the machine with the service and database."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.netloc = parts.netloc
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, headers: dict[str, str]) -> tuple[int, dict]:
        conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        try:
            lines = [f"POST {path} HTTP/1.1", f"Host: {self.netloc}", "Content-Length: 0"]
            lines += [f"{name}: {value}" for name, value in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionError("the service closed the connection")
            status = int(status_line.split()[1])
            length, chunked, close = None, False, False
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding":
                    chunked = "chunked" in value
                elif name == "connection":
                    close = value == "close"
            if chunked:
                body = await self._chunked(reader)
            elif length is not None:
                body = await reader.readexactly(length)
            else:
                body, close = await reader.read(), True
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self.idle.append(conn)
        return status, json.loads(body) if body else {}

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while size := int((await reader.readline()).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        return bytes(body)

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        for _, writer in idle:
            writer.close()
        for _, writer in idle:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


CLIENT_ERRORS = (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, httpx.HTTPError)


async def http_burst(post, work, concurrency: int):
    """All sign-ups launched at once, `concurrency` in flight; (answers, latencies_s, wall_s).

    `post(path, headers)` returns (status, JSON body)."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(activity_id: ObjectId, token: str):
        async with gate:
            started = time.perf_counter()
            try:
                answer = await post(
                    f"/mp/v1/activities/{activity_id}/signup",
                    {"Authorization": f"Bearer {token}"},
                )
            except CLIENT_ERRORS as exc:
                answer = (0, {"error": repr(exc)})
            latencies.append(time.perf_counter() - started)
            return answer

    started = time.perf_counter()
    answers = await asyncio.gather(*(one(a, token) for a, (_, token) in work))
    return answers, latencies, time.perf_counter() - started


@contextlib.asynccontextmanager
async def http_client(kind: str, url: str, concurrency: int):
    """An async `post(path, headers)`: the keep-alive pool above, or httpx for comparison."""
    if kind == "httpx":
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

            async def post(path: str, headers: dict[str, str]) -> tuple[int, dict]:
                response = await client.post(path, headers=headers)
                return response.status_code, response.json()

            yield post
        return
    pool = KeepAlivePool(url)
    try:
        yield pool.post
    finally:
        await pool.close()


# -- the raw phase: the same reservation straight through the driver --------------------------

_WINDOW = {"title": 1, "starts_at": 1, "ends_at": 1, "org_id": 1, "capacity": 1, "waitlist": 1}


async def raw_reserve(ctx, activity_id: ObjectId, user_id: ObjectId) -> str:
    """What sign_up does for a seat, without HTTP, auth or the overlap check: one conditional
    update for a seat (as seats.take_seat(by="signup")), the waitlist one when full (as
    seats.join_waitlist), then the record."""
    coll = ctx.db["activities"]
    now = ctx.clock.now()
    open_now = {"status": "published", "signup_deadline": {"$gt": now}, "starts_at": {"$gt": now}}
    status, seq = "confirmed", None
    window = await coll.find_one_and_update(
        {
            "_id": activity_id,
            "$expr": {"$lt": ["$confirmed_count", "$capacity"]},
            **open_now,
            "waitlist_count": 0,
            "approval": "auto",
        },
        {"$inc": {"confirmed_count": 1}},
        projection=_WINDOW,
    )
    if window is None:
        status = "waitlisted"
        window = await coll.find_one_and_update(
            {"_id": activity_id, "waitlist": True, **open_now},
            {"$inc": {"waitlist_count": 1, "waitlist_seq": 1}},
            projection={**_WINDOW, "waitlist_seq": 1},
            return_document=ReturnDocument.AFTER,
        )
        if window is None:
            return "closed"
        seq = window["waitlist_seq"]
    record = signups.new_record(activity_id, user_id, status, window, seq, now)
    await ctx.db["signups"].insert_one(record)
    return status


async def raw_burst(ctx, work, concurrency: int):
    gate = asyncio.Semaphore(concurrency)

    async def one(activity_id: ObjectId, user_id: ObjectId):
        async with gate:
            return await raw_reserve(ctx, activity_id, user_id)

    started = time.perf_counter()
    statuses = await asyncio.gather(*(one(a, user_id) for a, (user_id, _) in work))
    return statuses, time.perf_counter() - started


# -- checks -----------------------------------------------------------------------------------


async def audit(ctx, activity_ids: list[ObjectId], capacity: int) -> tuple[int, int, list[str]]:
    """(confirmed records, oversold seats, counter mismatches) read back from the database."""
    confirmed = oversold = 0
    problems: list[str] = []
    for activity_id in activity_ids:
        doc = await ctx.db["activities"].find_one({"_id": activity_id})
        counts = {"confirmed": 0, "waitlisted": 0, "pending": 0}
        async for record in ctx.db["signups"].find({"activity_id": activity_id}, {"status": 1}):
            counts[record["status"]] = counts.get(record["status"], 0) + 1
        confirmed += counts["confirmed"]
        oversold += max(0, counts["confirmed"] - capacity)
        stored = (doc["confirmed_count"], doc["waitlist_count"], doc["pending_count"])
        recorded = (counts["confirmed"], counts["waitlisted"], counts["pending"])
        if stored != recorded:
            problems.append(f"{activity_id}: counters {stored} but records {recorded}")
    return confirmed, oversold, problems


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# -- the run ----------------------------------------------------------------------------------


def cpu_seconds(pids: dict[str, int | None]) -> dict[str, float]:
    """User + system CPU time of each process so far (Linux /proc; empty elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    used = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError, ValueError, IndexError, TypeError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[name] = (int(fields[11]) + int(fields[12])) / ticks
    return used


async def db_ops(ctx) -> dict[str, int]:
    """The server's operation counters (serverStatus opcounters)."""
    with contextlib.suppress(Exception):
        status = await ctx.client.admin.command("serverStatus")
        return {k: int(v) for k, v in status.get("opcounters", {}).items()}
    return {}


def ops_report(before: dict[str, int], after: dict[str, int], requests: int) -> str:
    per = {k: (after[k] - before.get(k, 0)) / requests for k in after}
    text = ", ".join(f"{k} {v:.2f}" for k, v in per.items() if v)
    return f"{sum(per.values()):.2f} ({text})"


def cpu_report(before: dict[str, float], after: dict[str, float], wall_s: float) -> str:
    return ", ".join(
        f"{name} {after[name] - before[name]:.1f}s ({(after[name] - before[name]) / wall_s:.0%})"
        for name in after
        if name in before
    )


async def open_context(uri: str, db_name: str, emulator_port: int, data_dir: Path) -> Context:
    settings = bench_settings(uri, emulator_port, data_dir, mongodb_db=db_name, log_level="warning")
    return await start_context(settings)


async def populate(ctx, tag: str, n: int, m: int, capacity: int):
    """An organisation, a warm-up activity and M activities (published), warm-up volunteers and
    N volunteers with access tokens: (warm_activities, activities, warm_people, people)."""
    root = await orgs.create_org(ctx, "省科协", "province", None)
    team = await orgs.create_org(ctx, "科普志愿服务队", "team", root)
    creator = await identity.ensure_user(ctx, "o_bench_organiser")
    warm = await make_activities(ctx, team, creator, 1, capacity)
    acts = await make_activities(ctx, team, creator, m, capacity)
    warm_people = await make_volunteers(ctx, f"{tag}w", WARMUP)
    people = await make_volunteers(ctx, tag, n)
    return warm, acts, warm_people, people


async def run(args: argparse.Namespace) -> int:
    n, m, cap, concurrency = args.requests, args.activities, args.capacity, args.concurrency
    # SIGTERM stops the run like Ctrl-C does: through the `finally` below, leaving nothing behind.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    # Two identical fresh database processes, one per phase: SecantusDB slows down with the
    # writes it has served, so a phase run second on a shared server would be penalised.
    http_db, raw_db = EmbeddedDatabase(":memory:"), EmbeddedDatabase(":memory:")
    service: Service | None = None
    contexts: list[Context] = []
    scratch = tempfile.TemporaryDirectory(prefix="ikepu-bench-")
    try:
        http_uri, raw_uri = await asyncio.gather(http_db.start(), raw_db.start())
        db_name = f"bench_{uuid.uuid4().hex[:8]}"
        service = Service(http_uri, db_name, Path(scratch.name))
        await service.wait_healthy()
        say(f"service pid {service.proc.pid} at {service.url}")
        for uri in (http_uri, raw_uri):
            contexts.append(
                await open_context(
                    uri, db_name, service.emulator_port, Path(scratch.name) / f"b{len(contexts)}"
                )
            )
        http_ctx, raw_ctx = contexts

        prep = time.perf_counter()
        (http_warm, http_acts, http_warm_people, http_people), raw_side = await asyncio.gather(
            populate(http_ctx, "h", n, m, cap), populate(raw_ctx, "r", n, m, cap)
        )
        raw_warm, raw_acts, raw_warm_people, raw_people = raw_side
        say(f"prepared 2 x {m + 1} activities and {n + WARMUP} volunteers "
            f"in {time.perf_counter() - prep:.1f}s")  # fmt: skip

        # The HTTP phase.
        http_pids = {"db": http_db.pid, "service": service.proc.pid, "bench": os.getpid()}
        async with http_client(args.client, service.url, concurrency) as post:
            await http_burst(post, round_robin(http_warm, http_warm_people), concurrency)
            cpu_before, ops_before = cpu_seconds(http_pids), await db_ops(http_ctx)
            answers, latencies, http_wall = await http_burst(
                post, round_robin(http_acts, http_people), concurrency
            )
            http_cpu = cpu_report(cpu_before, cpu_seconds(http_pids), http_wall)
            http_ops = ops_report(ops_before, await db_ops(http_ctx), n)
        failed = [a for a in answers if a[0] not in (200, 201)]
        for code, body in failed[:5]:
            say(f"failed sign-up: {code} {body}")
        answered_confirmed = sum(1 for _, body in answers if body.get("status") == "confirmed")
        confirmed, oversold, problems = await audit(http_ctx, http_acts, cap)
        say(f"http: {n} sign-ups in {http_wall:.2f}s, {len(failed)} failed, "
            f"{answered_confirmed} answered confirmed, {confirmed} confirmed records; "
            f"cpu {http_cpu}; db ops per sign-up {http_ops}")  # fmt: skip
        if answered_confirmed != confirmed:
            problems.append(f"{answered_confirmed} answered confirmed but {confirmed} records are")

        # The raw phase: the same reservation straight through the driver.
        raw_pids = {"db": raw_db.pid, "bench": os.getpid()}
        await raw_burst(raw_ctx, round_robin(raw_warm, raw_warm_people), concurrency)
        cpu_before, ops_before = cpu_seconds(raw_pids), await db_ops(raw_ctx)
        statuses, raw_wall = await raw_burst(
            raw_ctx, round_robin(raw_acts, raw_people), concurrency
        )
        raw_cpu = cpu_report(cpu_before, cpu_seconds(raw_pids), raw_wall)
        raw_ops = ops_report(ops_before, await db_ops(raw_ctx), n)
        _, raw_oversold, raw_problems = await audit(raw_ctx, raw_acts, cap)
        say(f"raw: {n} reservations in {raw_wall:.2f}s, {statuses.count('confirmed')} confirmed, "
            f"{raw_oversold} oversold; cpu {raw_cpu}; "
            f"db ops per reservation {raw_ops}")  # fmt: skip
        for problem in problems + raw_problems:
            say(f"check failed: {problem}")

        rps = n / http_wall
        raw_rps = n / raw_wall
        print(
            json.dumps(
                {
                    "bench": "signup_burst",
                    "requests": n,
                    "confirmed": confirmed,
                    "oversold": oversold,
                    "p50_ms": round(percentile(latencies, 50) * 1000, 2),
                    "p99_ms": round(percentile(latencies, 99) * 1000, 2),
                    "rps": round(rps, 1),
                    "raw_rps": round(raw_rps, 1),
                    "ratio": round(rps / raw_rps, 3),
                }
            ),
            flush=True,
        )
        return 1 if failed or oversold or raw_oversold or problems or raw_problems else 0
    finally:
        for ctx in contexts:
            with contextlib.suppress(Exception):
                await ctx.client.drop_database(ctx.settings.mongodb_db)
            await ctx.close()
        if service is not None:
            await service.stop()
        await asyncio.gather(http_db.stop(), raw_db.stop(), return_exceptions=True)
        scratch.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="sign-ups (N)")
    parser.add_argument("--activities", type=int, default=10, help="activities (M)")
    parser.add_argument("--capacity", type=int, default=50, help="seats per activity")
    parser.add_argument("--concurrency", type=int, default=200, help="requests in flight")
    parser.add_argument(
        "--client",
        choices=("streams", "httpx"),
        default="streams",
        help="HTTP client of the bench: keep-alive asyncio streams (default), or httpx",
    )
    args = parser.parse_args(argv)
    configure_logging("auto", "warning", stream=sys.stderr)  # stdout holds the JSON line only
    if min(args.requests, args.activities, args.capacity, args.concurrency) < 1:
        parser.error("every count must be at least 1")
    try:
        return asyncio.run(run(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        say("interrupted; the service and databases are stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
