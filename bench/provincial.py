"""Provincial scale: the request paths of volunteers and staff on a generated year, against the
raw database primitive they are built on, and against the same paths at 100 activities.

    python bench/provincial.py [--seconds S] [--concurrency K] [--radius-km R] [--refresh]
                               [--volunteers N] [--activities N] [--trips N] [--year Y]
                               [--small-activities N]

Two databases, prepared alike and running side by side: a generated year (`server.seed.seed_year`
at the given scale: 148,000 volunteers, 11,425 activities with their sign-ups and hours, 1,220
caravan trips) and a small one (100 activities, the rest in proportion, the same organisation
tree). Each is generated once into `var/bench-cache/<key>/` (key: the Scale, server/seed.py,
server/db/indexes.py and the server's version; see `_support.cached_year`) and copied for every
run, since a run writes. On each copy: the embedded server (as the service starts it), the service
as its own process (`python -m server`) on it, and, through the domain code, six fresh published
activities at seeded sites (100 seats each, waitlist on) for the sign-ups, fresh volunteers with
access tokens for them, seeded volunteers with tokens for their own pages, the admin of the site
with the most pending hours (at least PENDING_PAGE of them, at both scales), and an org_admin of
the province. Then each measurement, for
`--seconds` of closed-loop load after a short warm-up, `--concurrency` in flight, on the small
database and right after on the year (the machine may be shared: both see it alike):

  signup          POST /mp/v1/activities/{id}/signup, each request a distinct volunteer, the
                  six activities round-robin; `oversold` (confirmed records beyond capacity) and
                  the counters are read back. Baseline: raw `update_one` by `_id` on the same six
                  activities (a field of its own, `$inc`), through the driver.
  discovery       GET /mp/v1/activities?near=LNG,LAT&radius_km=R at the places of upcoming
                  activities. Baseline: raw `find_one` by `_id` on the activities.
  my_signups      GET /mp/v1/me/signups, seeded volunteers in turn
  my_hours        GET /mp/v1/me/hours, likewise
  site_pending    GET /api/v1/sites/{id}/hours?status=pending&limit=4, as that site's admin:
                  one full page of PENDING_PAGE (4) records at both scales, the most the small
                  database's busiest site can fill (a year's holds some 23), so that the
                  scale ratio compares the same work; a site with fewer is a failed check
  annual_report   GET /api/v1/stats/annual?year=Y as org_admin
                  (pages: a first request alone, `solo_ms`, then as many in flight as fit in
                  `--seconds` back to back, at most `--concurrency`, for staff pages 4)

Prints one JSON line per measurement and scale, the small database's first:

  {"bench": "provincial", "what", "scale": "small"|"year", "requests", "errors", "concurrency",
   "rps", "p50_ms", "p99_ms", "solo_ms", "baseline_rps", "ratio", "oversold", "scale_ratio",
   "target", "ok"}

`ratio` is rps / baseline_rps (targets: sign-up 0.1, discovery 0.04); `scale_ratio` (year lines)
is the year's rps / the small database's rps for the same measurement (target 0.8). `target`
holds the minimum of each figure that has one; `ok` is whether all are met. Progress, CPU per
process and the cache go to stderr. The exit status is 1 when a request failed, an activity was
oversold or its counters disagree with its records; missed targets are reported, not failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import signal
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _support import (
    CACHE_DB,
    KeepAlivePool,
    Load,
    Service,
    audit,
    bench_settings,
    bounded,
    cached_year,
    closed_loop,
    copy_year,
    cpu_report,
    cpu_seconds,
    say,
    start_context,
)
from bson import ObjectId

from server.clock import SHANGHAI
from server.db import EmbeddedDatabase
from server.domain import access, activities, identity, orgs
from server.logs import configure_logging
from server.seed import Scale
from server.wechat.emulator import start_emulator

BURST_ACTIVITIES = 6
CAPACITY = 100
BURST_VOLUNTEERS = 4_000  # sign-ups are distinct volunteers: enough for seconds of load
WARMUP_S = 0.5
READERS = 500  # seeded volunteers whose own pages are read
POINTS = 200
STAFF_CONCURRENCY = 4  # staff pages: a few organisers at once
PENDING_PAGE = 4  # records per site_pending page: as many as both scales' busiest sites fill
TARGETS = {"signup": 0.1, "discovery": 0.04}
SCALE_TARGET = 0.8
ORGANISER = "o_bench_organiser"
SITE_ADMIN = "o_bench_site_admin"


def log(*parts: object) -> None:
    say("provincial", *parts)


def small_scale(year: Scale, activities_n: int) -> Scale:
    """`activities_n` activities, volunteers, teams, bases, projects and trips in proportion."""
    share = activities_n / year.activities

    def part(n: int) -> int:
        return max(1, round(n * share))

    return dataclasses.replace(
        year,
        activities=activities_n,
        volunteers=part(year.volunteers),
        teams=part(year.teams),
        bases=part(year.bases),
        projects=part(year.projects),
        trips=part(year.trips),
    )


# -- preparation, through the domain code -----------------------------------------------------


@dataclasses.dataclass
class Prepared:
    burst: list[ObjectId]  # the activities signed up for
    warm_activity: ObjectId
    capacity: int
    volunteers: list[str]  # tokens of fresh volunteers, one sign-up each
    warm_volunteers: list[str]
    readers: list[str]  # tokens of seeded volunteers
    organiser: str
    site_id: ObjectId
    site_admin: str
    pending_at_site: int
    points: list[tuple[float, float]]
    activity_ids: list[ObjectId]  # seeded activities, for the raw reads


def _token(ctx, user_id: ObjectId, openid: str) -> str:
    return identity.issue_access_token(ctx, user_id, openid)[0]


async def _staff(ctx, openid: str) -> tuple[ObjectId, str]:
    user_id = await identity.ensure_user(ctx, openid)
    return user_id, _token(ctx, user_id, openid)


async def prepare(ctx, scale: Scale, rng: random.Random) -> Prepared:
    root = (await orgs.root_org(ctx))["_id"]
    organiser, organiser_token = await _staff(ctx, ORGANISER)
    await access.grant_role(ctx, organiser, "org_admin", root)

    # Fresh activities at seeded sites, a team of the site's county organising when it has one.
    site_docs = await ctx.db["sites"].find({}, {"org_id": 1}).sort("_id", 1).to_list(None)
    teams = await ctx.db["orgs"].find({"kind": "team"}, {"parent_id": 1}).to_list(None)
    team_of = {t["parent_id"]: t["_id"] for t in teams}
    start = ctx.clock.now().replace(microsecond=0) + timedelta(days=3)
    created = []
    for i, site in enumerate(rng.sample(site_docs, BURST_ACTIVITIES + 1)):
        new = activities.NewActivity(
            title=f"科技馆志愿讲解 {i}",
            description="带领小学生参观科技馆",
            org_id=str(team_of.get(site["org_id"], teams[i % len(teams)]["_id"])),
            site_id=str(site["_id"]),
            starts_at=start + timedelta(hours=4 * i),
            ends_at=start + timedelta(hours=4 * i + 3),
            capacity=CAPACITY,
            waitlist=True,
        )
        activity_id = await activities.create_activity(ctx, new, created_by=organiser)
        await activities.publish(ctx, activity_id, publisher_openid=ORGANISER)
        created.append(activity_id)

    # Fresh volunteers for the sign-ups (distinct ones, as many at either scale).
    count = BURST_VOLUNTEERS + 100
    openids = [f"o_bench_{i}" for i in range(count)]
    people = await identity.import_users(ctx, [(o, "志愿者") for o in openids])
    tokens = [_token(ctx, u, o) for u, o in zip(people, openids, strict=True)]

    # Seeded volunteers, with their sign-ups and hours, for their own pages.
    picked = rng.sample(range(scale.volunteers), min(READERS, scale.volunteers))
    chosen = [f"seed_{scale.seed}_{n}" for n in picked]
    found = await bounded(
        (
            ctx.db["users"].find({"openid": {"$in": chosen[i : i + 100]}}, {"openid": 1}).to_list()
            for i in range(0, len(chosen), 100)
        ),
        8,
    )
    readers = [_token(ctx, u["_id"], u["openid"]) for batch in found for u in batch]

    # The site with the most pending hours, and an admin of it.
    busiest = await (
        await ctx.db["hours_ledger"].aggregate(
            [
                {"$match": {"kind": "credit", "status": "pending", "site_id": {"$ne": None}}},
                {"$group": {"_id": "$site_id", "n": {"$sum": 1}}},
                {"$sort": {"n": -1, "_id": 1}},
                {"$limit": 1},
            ]
        )
    ).to_list()
    if not busiest:  # a year too small to leave hours pending: any site
        busiest = [{"_id": site_docs[0]["_id"], "n": 0}]
    site = await ctx.db["sites"].find_one({"_id": busiest[0]["_id"]})
    admin, admin_token = await _staff(ctx, SITE_ADMIN)
    await access.appoint_site_admin(ctx, admin, site)

    # Where activities are: the places of the upcoming ones (discovery lists only those).
    upcoming = await (
        ctx.db["activities"]
        .find(
            {
                "status": {"$in": ["published", "ongoing"]},
                "ends_at": {"$gt": ctx.clock.now()},
                "location": {"$exists": True},
            },
            {"location": 1},
        )
        .to_list(None)
    )
    places = [tuple(a["location"]["coordinates"]) for a in upcoming]
    points = rng.sample(places, min(POINTS, len(places)))
    seeded = await ctx.db["activities"].find({}, {"_id": 1}).to_list(None)
    activity_ids = [a["_id"] for a in rng.sample(seeded, min(1_000, len(seeded)))]
    return Prepared(
        burst=created[1:],
        warm_activity=created[0],
        capacity=CAPACITY,
        volunteers=tokens[100:],
        warm_volunteers=tokens[:100],
        readers=readers,
        organiser=organiser_token,
        site_id=site["_id"],
        site_admin=admin_token,
        pending_at_site=busiest[0]["n"],
        points=points,
        activity_ids=activity_ids,
    )


# -- the measurements -------------------------------------------------------------------------


def _rate(rps: float) -> float:
    """Three significant figures, or one decimal at 100/s and above."""
    return round(rps, 1) if rps >= 100 else float(f"{rps:.3g}")


def _failed(load: Load, ok: tuple[int, ...] = (200,)) -> list:
    return [a for a in load.answers if a[0] not in ok]


class Run:
    """One database copy, the service on it, and the measurements of one scale."""

    def __init__(self, label: str, args: argparse.Namespace, ctx, service: Service, db_pid):
        self.label, self.args, self.ctx, self.service = label, args, ctx, service
        self.pids = {"db": db_pid, "service": service.proc.pid, "bench": os.getpid()}
        self.pool = KeepAlivePool(service.url)
        self.prep: Prepared | None = None
        self.results: dict[str, dict] = {}
        self.problems: list[str] = []

    async def load(
        self, what: str, call, *, concurrency=None, limit=None, warm=None, min_calls=100
    ) -> Load:
        concurrency = concurrency or self.args.concurrency
        if warm is not None:
            await closed_loop(warm, seconds=WARMUP_S, concurrency=concurrency)
        before = cpu_seconds(self.pids)
        done = await closed_loop(
            call,
            seconds=self.args.seconds,
            concurrency=concurrency,
            limit=limit,
            min_calls=min(min_calls, limit or min_calls),
        )
        log(f"{self.label} {what}: {done.count} in {done.wall_s:.2f}s, {done.rps:.1f}/s, "
            f"p50 {done.ms(50)} ms, p99 {done.ms(99)} ms; "
            f"cpu {cpu_report(before, cpu_seconds(self.pids), done.wall_s)}")  # fmt: skip
        return done

    def record(self, what: str, done: Load, failed: list, concurrency: int, **more) -> None:
        for code, body in failed[:3]:
            self.problems.append(f"{self.label} {what}: answered {code} {str(body)[:200]}")
        self.results[what] = {
            "requests": done.count,
            "errors": len(failed),
            "concurrency": concurrency,
            "rps": _rate(done.rps),
            "p50_ms": done.ms(50),
            "p99_ms": done.ms(99),
            **more,
        }

    async def raw(self, what: str, call) -> Load:
        return await self.load(f"{what} baseline", call)

    async def signup(self) -> None:
        """The raw update first, then distinct volunteers signing up through HTTP; read back."""
        prep, pool, k = self.prep, self.pool, self.args.concurrency
        burst, coll = prep.burst, self.ctx.db["activities"]
        base = await self.raw(
            "signup",
            lambda i: coll.update_one({"_id": burst[i % len(burst)]}, {"$inc": {"bench_n": 1}}),
        )

        def signup(activities_: list[ObjectId], tokens: list[str]):
            def call(i: int):
                return pool.post(
                    f"/mp/v1/activities/{activities_[i % len(activities_)]}/signup",
                    {"Authorization": f"Bearer {tokens[i]}"},
                )

            return call

        warm = prep.warm_volunteers
        await closed_loop(
            signup([prep.warm_activity], warm), seconds=WARMUP_S, concurrency=k, limit=len(warm)
        )
        done = await self.load("signup", signup(burst, prep.volunteers), limit=len(prep.volunteers))
        answered = sum(1 for a in done.answers if a[1].get("status") == "confirmed")
        confirmed, oversold, problems = await audit(self.ctx, burst, prep.capacity)
        if answered != confirmed:
            problems.append(f"{answered} answered confirmed but {confirmed} records are")
        self.problems += [f"{self.label} signup: {p}" for p in problems]
        log(f"{self.label} signup: {confirmed} confirmed of {len(burst) * prep.capacity} seats, "
            f"{oversold} oversold")  # fmt: skip
        self.record(
            "signup",
            done,
            _failed(done, (200, 201)),
            k,
            baseline_rps=_rate(base.rps),
            ratio=round(done.rps / base.rps, 4) if base.rps else None,
            oversold=oversold,
        )

    async def discovery(self) -> None:
        """The raw read by _id first, then near-me pages at the places of upcoming activities."""
        prep, pool = self.prep, self.pool
        ids, coll = prep.activity_ids, self.ctx.db["activities"]
        base = await self.raw("discovery", lambda i: coll.find_one({"_id": ids[i % len(ids)]}))
        radius, points = self.args.radius_km, prep.points

        def near(i: int):
            lng, lat = points[i % len(points)]
            return pool.get(
                f"/mp/v1/activities?near={lng},{lat}&radius_km={radius}",
                {"Authorization": f"Bearer {prep.readers[i % len(prep.readers)]}"},
                parse=False,
            )

        done = await self.load("discovery", near, warm=near)
        self.record(
            "discovery",
            done,
            _failed(done),
            self.args.concurrency,
            baseline_rps=_rate(base.rps),
            ratio=round(done.rps / base.rps, 4) if base.rps else None,
        )

    async def page(self, what: str) -> None:
        """One of the volunteers' or staff pages, read over and over. A first request alone
        (`solo_ms`) warms up and sets how many go at once: up to `--concurrency` (staff pages
        4), as many as fit in `--seconds` one after another, so that a page taking seconds is
        measured in seconds too rather than queueing a minute behind itself."""
        prep, k = self.prep, self.args.concurrency
        path, tokens, most = {
            "my_signups": ("/mp/v1/me/signups", prep.readers, k),
            "my_hours": ("/mp/v1/me/hours", prep.readers, k),
            "site_pending": (
                f"/api/v1/sites/{prep.site_id}/hours?status=pending&limit={PENDING_PAGE}",
                [prep.site_admin],
                min(STAFF_CONCURRENCY, k),
            ),
            "annual_report": (
                f"/api/v1/stats/annual?year={self.args.year}",
                [prep.organiser],
                min(STAFF_CONCURRENCY, k),
            ),
        }[what]

        def call(i: int):
            token = tokens[(i + 1) % len(tokens)]  # the solo request read the first
            return self.pool.get(path, {"Authorization": f"Bearer {token}"}, parse=False)

        started = time.perf_counter()
        solo = await call(-1)
        solo_s = time.perf_counter() - started
        concurrency = max(1, min(most, int(self.args.seconds / max(solo_s, 1e-3))))
        warm = call if solo_s * concurrency < WARMUP_S else None
        done = await self.load(
            what, call, concurrency=concurrency, warm=warm, min_calls=max(concurrency, 10)
        )
        failed = _failed(done) + ([solo] if solo[0] != 200 else [])
        self.record(what, done, failed, concurrency, solo_ms=round(solo_s * 1000, 1))


PAGES = ("my_signups", "my_hours", "site_pending", "annual_report")


@contextlib.asynccontextmanager
async def running(label: str, source: Path, args: argparse.Namespace, scratch: Path):
    """A copy of the cached year, the embedded server on it, a wired context of the bench, and
    the service as its own process on it; all stopped on the way out."""
    here = scratch / label
    here.mkdir()
    started = time.perf_counter()
    copied = copy_year(source, here)
    log(f"{label}: copied the cached year in {time.perf_counter() - started:.1f}s")
    database = EmbeddedDatabase(str(copied), log_path=str(here / "db.log"))
    emulator, _, emulator_port = start_emulator()
    ctx = service = None
    try:
        uri = await database.start(timeout_s=120)
        settings = bench_settings(
            uri, emulator_port, here / "bench", mongodb_db=CACHE_DB, log_level="warning"
        )
        ctx = await start_context(settings)  # migrations run here, before the service starts
        service = Service(uri, CACHE_DB, here)
        await service.wait_healthy(timeout_s=120)
        log(f"{label}: service pid {service.proc.pid} at {service.url}, db pid {database.pid}")
        run = Run(label, args, ctx, service, database.pid)
        try:
            yield run
        finally:
            await run.pool.close()
    finally:
        if service is not None:
            await service.stop()
        if ctx is not None:
            await ctx.close()
        emulator.stop()
        await database.stop(timeout_s=60)


@contextlib.asynccontextmanager
async def scale_ready(label: str, scale: Scale, source: Path, args, scratch: Path):
    """The cached year of `scale` at `source`, copied, running and prepared."""
    async with running(label, source, args, scratch) as run:
        started = time.perf_counter()
        run.prep = await prepare(run.ctx, scale, random.Random(scale.seed))
        log(f"{label}: prepared in {time.perf_counter() - started:.1f}s ({len(run.prep.points)} "
            f"places, site with {run.prep.pending_at_site} pending)")  # fmt: skip
        if run.prep.pending_at_site < PENDING_PAGE:
            run.problems.append(f"{label} site_pending: {run.prep.pending_at_site} pending "
                                f"records, fewer than a page of {PENDING_PAGE}")  # fmt: skip
        yield run


async def cached(label: str, scale: Scale, args) -> Path:
    source, manifest = await cached_year(scale, refresh=args.refresh, bench="provincial")
    log(f"{label}: {manifest['written']} (generated {manifest['generated_at']} "
        f"in {manifest['seed_s']}s)")  # fmt: skip
    return source


ORDER = ("bench", "what", "scale", "requests", "errors", "concurrency", "rps", "p50_ms", "p99_ms",
         "solo_ms", "baseline_rps", "ratio", "oversold", "scale_ratio", "target", "ok")  # fmt: skip


def lines(run: Run, small: Run | None) -> list[dict]:
    """The JSON lines of one scale; with `small`, its scale ratios too."""
    out = []
    for what, figures in run.results.items():
        line = {"bench": "provincial", "what": what, "scale": run.label, **figures}
        target: dict = {}
        met: list[bool] = []
        if what in TARGETS:
            target["ratio"] = TARGETS[what]
            met.append(figures["ratio"] is not None and figures["ratio"] >= TARGETS[what])
        if what == "signup":
            target["oversold"] = 0
            met.append(figures["oversold"] == 0)
        if small is not None:
            before = small.results[what]["rps"]
            line["scale_ratio"] = round(figures["rps"] / before, 3) if before else None
            target["scale_ratio"] = SCALE_TARGET
            met.append(line["scale_ratio"] is not None and line["scale_ratio"] >= SCALE_TARGET)
        if target:
            line["target"] = target
            line["ok"] = all(met) and figures["errors"] == 0
        out.append({k: line[k] for k in ORDER if k in line})
    return out


async def run(args: argparse.Namespace) -> int:
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    year = Scale(
        volunteers=args.volunteers, activities=args.activities, trips=args.trips, year=args.year
    )
    small = small_scale(year, args.small_activities)
    started = time.perf_counter()
    # Both years first: the embedded server drops connections idle for 5 minutes, and a
    # generation takes longer than that.
    sources = {
        "small": await cached("small", small, args),
        "year": await cached("year", year, args),
    }
    with tempfile.TemporaryDirectory(prefix="ikepu-provincial-") as scratch:
        async with (
            scale_ready("small", small, sources["small"], args, Path(scratch)) as small_run,
            scale_ready("year", year, sources["year"], args, Path(scratch)) as year_run,
        ):
            # Each measurement at both scales back to back, so that both see the same machine
            # (other work on it comes and goes); the idle one's processes only wait.
            for run_ in (small_run, year_run):
                await run_.signup()
            for run_ in (small_run, year_run):
                await run_.discovery()
            for what in PAGES:
                for run_ in (small_run, year_run):
                    await run_.page(what)
        for line in lines(small_run, None) + lines(year_run, small_run):
            print(json.dumps(line, ensure_ascii=False), flush=True)
    for problem in small_run.problems + year_run.problems:
        log(f"check failed: {problem}")
    log(f"done in {time.perf_counter() - started:.0f}s")
    return 1 if small_run.problems or year_run.problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="load per measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--radius-km", type=float, default=10.0, help="discovery radius")
    parser.add_argument("--volunteers", type=int, default=148_000)
    parser.add_argument("--activities", type=int, default=11_425)
    parser.add_argument("--trips", type=int, default=1_220)
    parser.add_argument(
        "--year",
        type=int,
        default=datetime.now(SHANGHAI).year,
        help="the generated year (default: this one, so that some activities are upcoming)",
    )
    parser.add_argument("--small-activities", type=int, default=100)
    parser.add_argument("--refresh", action="store_true", help="generate the cached years again")
    args = parser.parse_args(argv)
    configure_logging("auto", "warning", stream=sys.stderr)  # stdout holds the JSON lines only
    if args.seconds <= 0 or args.concurrency < 1 or args.small_activities < 1:
        parser.error("seconds, concurrency and small activities must be positive")
    try:
        return asyncio.run(run(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        log("interrupted; the services and databases are stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
