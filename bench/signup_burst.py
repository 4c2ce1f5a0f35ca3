"""Sign-up burst: N concurrent HTTP sign-ups through the running service for M activities.

    python bench/signup_burst.py [--requests N] [--activities M] [--capacity C]
                                 [--concurrency K] [--client streams|httpx]

Starts the service as its own process (`python -m server`, with its WeChat emulator) on an
embedded database (in memory), prepares an organisation, M published activities of capacity C
(waitlist on) and N volunteers with access tokens straight through the domain code, then sends the
N sign-ups at once (K in flight), each volunteer to one activity, round-robin. The baseline, in the
same run: the raw primitives the sign-up path is built on, straight through the driver —
`update_one({_id, seats_left: {$gt: 0}, ...}, {$inc: {confirmed_count: 1, seats_left: -1}})`, the
waitlist's `update_one` on the _id when that misses, and `insert_one` of the record — same N, M,
C and K, on fresh activities and volunteers in collections of the same size as the service's.
Each phase is timed after a warm-up of 100 on an activity of its own. Prints one JSON line:

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
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from _support import (  # noqa: E402
    CLIENT_ERRORS,
    KeepAlivePool,
    Service,
    audit,
    bench_settings,
    bounded,
    cpu_report,
    cpu_seconds,
    percentile,
    start_context,
)
from _support import say as _say  # noqa: E402
from bson import ObjectId  # noqa: E402

from server.context import Context  # noqa: E402
from server.db.embedded import EmbeddedDatabase  # noqa: E402
from server.domain import activities, identity, orgs, signups  # noqa: E402
from server.logs import configure_logging  # noqa: E402

WARMUP = 100
SETUP_CONCURRENCY = 50


def say(*parts: object) -> None:
    _say("signup_burst", *parts)


# -- preparation, straight through the domain code --------------------------------------------


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


# -- the raw phase: the primitives of the sign-up path straight through the driver ------------


def open_now(now) -> dict:
    """Sign-up is open (as seats._open_for_signup): plain conditions on the same document."""
    return {"status": "published", "signup_deadline": {"$gt": now}, "starts_at": {"$gt": now}}


async def raw_reserve(ctx, activity_id: ObjectId, user_id: ObjectId, window: dict) -> str:
    """The primitives the sign-up path is built on, without HTTP, auth, the overlap check or
    reading the activity back: `update_one` on the _id with `seats_left > 0` (as
    seats.take_seat(by="signup")), when that misses the waitlist's `update_one` on the _id, then
    `insert_one` of the record. `window` is the activity's times and waitlist number, read once
    before the phase (the number counts on here rather than being read back)."""
    coll = ctx.db["activities"]
    now = ctx.clock.now()
    status, seq = "confirmed", None
    taken = await coll.update_one(
        {
            "_id": activity_id,
            "seats_left": {"$gt": 0},
            **open_now(now),
            "waitlist_count": 0,
            "approval": "auto",
        },
        {"$inc": {"confirmed_count": 1, "seats_left": -1}},
    )
    if not taken.matched_count:
        joined = await coll.update_one(
            {"_id": activity_id, "waitlist": True, **open_now(now)},
            {"$inc": {"waitlist_count": 1, "waitlist_seq": 1}},
        )
        if not joined.matched_count:
            return "closed"
        status = "waitlisted"
        window["waitlist_seq"] += 1
        seq = window["waitlist_seq"]
    record = signups.new_record(activity_id, user_id, status, window, seq, now)
    await ctx.db["signups"].insert_one(record)
    return status


async def raw_burst(ctx, work, concurrency: int):
    ids = list(dict.fromkeys(a for a, _ in work))
    windows = {
        doc["_id"]: doc
        async for doc in ctx.db["activities"].find(
            {"_id": {"$in": ids}}, {"starts_at": 1, "ends_at": 1, "waitlist_seq": 1}
        )
    }
    gate = asyncio.Semaphore(concurrency)

    async def one(activity_id: ObjectId, user_id: ObjectId):
        async with gate:
            return await raw_reserve(ctx, activity_id, user_id, windows[activity_id])

    started = time.perf_counter()
    statuses = await asyncio.gather(*(one(a, user_id) for a, (user_id, _) in work))
    return statuses, time.perf_counter() - started


async def sizes(ctx) -> dict[str, int]:
    """Documents in the collections a sign-up touches."""
    names = ("activities", "signups", "users")
    return {n: await ctx.db[n].count_documents({}) for n in names}


# -- the run ----------------------------------------------------------------------------------


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
            say(f"http database before the timed phase: {await sizes(http_ctx)}")
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

        # The raw phase: the primitives of the same reservation straight through the driver,
        # on collections of the same size as the service's were.
        raw_pids = {"db": raw_db.pid, "bench": os.getpid()}
        await raw_burst(raw_ctx, round_robin(raw_warm, raw_warm_people), concurrency)
        say(f"raw database before the timed phase: {await sizes(raw_ctx)}")
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
