"""A provincial year of made-up records, for statistics tests and benchmarks:
`python -m server seed-scale --volunteers 148000 --activities 11425 --year 2026`.

The organisation tree is the province's real cities and counties (the offline gazetteer); teams,
bases, sites, projects, caravans and depots go through the domain's single paths, one by one (the
order of their ids is part of the year: reports list ties by it); volunteers, activities,
sign-ups, hours and trips, being many, through their bulk paths, in the same shapes (an activity
at a site has the site's place, as `activities.create_activity` gives it), in large unordered
batches. Bulk paths announce no events, so the statistics roll-ups are recounted at the end, as
the nightly check would. Everything is drawn from one seeded random generator, in one order: the
same arguments give the same year.

Indexes: the embedded server keeps a secondary index up to date during inserts at three to eight
times the CPU of building it over the documents afterwards, but it writes a build's entries one
commit each, so a server that syncs every commit (`--sync-on-commit`, as the service starts it on
disk) builds at a few milliseconds an entry, far slower. So the collections loaded in bulk are
written without their secondary indexes, built again from `server.db.indexes` once they are full
(even when the load fails; `Context.start` would build any still missing), only where that is
faster: `indexes_after`, or when not given, timed on two scratch collections first. Run it with
no service writing to the database: a unique index is not there to refuse a duplicate meanwhile.
A full year so built takes some 5 minutes of the server's CPU (bench/_support.py caches one),
against some 23 with the indexes kept, which is still what a syncing server gets.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from bson import ObjectId
from pymongo import IndexModel
from pymongo.errors import OperationFailure

from server import geo
from server.clock import SHANGHAI
from server.db.indexes import INDEXES
from server.demo import PROVINCE, scatter
from server.domain import (
    activities,
    caravans,
    hours,
    identity,
    orgs,
    projects,
    signups,
    sites,
    stats,
)
from server.domain.errors import Conflict

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏飞宇浩然欣怡子涵梓轩"
SITE_KINDS = [
    ("school", "第一小学", "中小学生"),
    ("school", "实验中学", "中小学生"),
    ("village", "村综合文化服务中心", "村民"),
    ("community", "社区服务中心", "居民"),
]
CHUNK = 1_000  # activities drawn per round (with some 10,000 sign-ups and as many credits)
USERS_CHUNK = 10_000  # volunteers per round
LOADED = ("users", "activities", "signups", "hours_ledger", "visit_requests", "trips")
NAMESPACE_NOT_FOUND = 26
ROLLUPS = ("stats_orgs", "stats_volunteers", "stats_sites", "stats_projects")
PROBE_DOCS = 1_000  # documents of each scratch collection timing index builds


@dataclass
class Scale:
    volunteers: int = 148_000
    activities: int = 11_425
    year: int = 2026
    teams: int = 1_184
    bases: int = 96
    projects: int = 120
    trips: int = 1_220
    cities: int | None = None  # the first N cities only (None: all)
    seed: int = 2026


@dataclass
class _Tree:
    root: ObjectId
    counties: list[ObjectId]
    teams: list[tuple[ObjectId, ObjectId]]  # (team, its county)
    sites: dict[ObjectId, list[dict]]  # county → sites
    projects: list[ObjectId]


async def seed_year(
    ctx,
    scale: Scale,
    progress: Callable[[int], None] = lambda n: None,
    *,
    indexes_after: bool | None = None,
) -> dict:
    """Write the year into an empty database; returns what was written. Progress is reported
    in records (volunteers, then activities, then trips). `indexes_after`: build the secondary
    indexes of the collections loaded in bulk after loading them (None: if this server is
    measured to build faster than it keeps an index up to date)."""
    if await orgs.root_org(ctx) is not None:
        raise Conflict("数据库中已有数据：seed-scale 只写入空数据库", code="not_empty")
    if indexes_after is None:
        indexes_after = await _building_is_faster(ctx)
    rng = random.Random(scale.seed)
    tree = await _organisations(ctx, scale, rng)
    async with indexes_afterwards(ctx, LOADED if indexes_after else ()):
        people = await _volunteers(ctx, scale, rng, progress)
        written = await _activities(ctx, scale, rng, tree, people, progress)
        written["trips"] = await _trips(ctx, scale, rng, tree, progress)
    async with indexes_afterwards(ctx, ROLLUPS if indexes_after else ()):
        repaired = await stats.reconcile(ctx, scale.year, quiet=True)
    written["mismatches_repaired"] = sum(repaired.values())
    return {
        "volunteers": len(people),
        "teams": len(tree.teams),
        **written,
        "indexes_after": indexes_after,
    }


async def _building_is_faster(ctx) -> bool:
    """Whether this server builds an index over documents faster than it keeps the index up to
    date while they are inserted, timed on two scratch collections of PROBE_DOCS documents."""
    index = [IndexModel([("k", 1), ("n", 1)])]
    kept, built = ctx.db["seed_probe_kept"], ctx.db["seed_probe_built"]
    try:
        await kept.create_indexes(index)
        started = time.perf_counter()
        await kept.insert_many([{"k": n % 97, "n": n} for n in range(PROBE_DOCS)], ordered=False)
        keeping = time.perf_counter() - started
        started = time.perf_counter()
        await built.insert_many([{"k": n % 97, "n": n} for n in range(PROBE_DOCS)], ordered=False)
        await built.create_indexes(index)
        building = time.perf_counter() - started
    finally:
        await kept.drop()
        await built.drop()
    return building < keeping


@contextlib.asynccontextmanager
async def indexes_afterwards(ctx, names: Iterable[str]) -> AsyncIterator[None]:
    """These collections without their secondary indexes for the block, then with all of them
    again (`server.db.indexes`), built over the documents the block wrote."""
    names = list(names)
    for name in names:
        try:
            await ctx.db[name].drop_indexes()
        except OperationFailure as exc:
            if exc.code != NAMESPACE_NOT_FOUND:  # no collection yet: no index to drop
                raise
    try:
        yield
    finally:
        for name in names:
            if name in INDEXES:  # those without declared indexes had none to drop
                await ctx.db[name].create_indexes(INDEXES[name])


async def _organisations(ctx, scale: Scale, rng: random.Random) -> _Tree:
    root = await orgs.create_org(ctx, PROVINCE[0], "province", None, adcode=PROVINCE[1])
    by_city: dict[str, list[dict]] = defaultdict(list)
    for row in geo.counties_of(PROVINCE[1][:2]):
        by_city[row["city_adcode"] or row["adcode"][:4] + "00000000"].append(row)
    cities = sorted(by_city.items())[: scale.cities]
    counties, county_rows, city_ids = [], {}, []
    for city_adcode, rows in cities:
        city = geo.adcode_lookup(city_adcode)
        city_id = await orgs.create_org(
            ctx, f"{city['name']}科协", "city", root, adcode=city_adcode[:6]
        )
        city_ids.append(city_id)
        for row in rows:
            county = await orgs.create_org(
                ctx, f"{row['name']}科协", "county", city_id, adcode=row["adcode"][:6]
            )
            counties.append(county)
            county_rows[county] = row
    teams = []
    for n in range(scale.teams):
        county = counties[n % len(counties)]
        name = f"{county_rows[county]['name']}科普志愿服务{n // len(counties) + 1}队"
        teams.append((await orgs.create_org(ctx, name, "team", county), county))
    for n in range(scale.bases):
        county = rng.choice(counties)
        await orgs.create_org(
            ctx, f"{county_rows[county]['name']}科普教育基地{n + 1}", "base", county
        )
    site_docs: dict[ObjectId, list[dict]] = {}
    for county, row in county_rows.items():
        site_docs[county] = []
        for kind, label, audience in SITE_KINDS:
            new = sites.NewSite(
                name=f"{row['name']}{label}",
                kind=kind,
                org_id=str(county),
                audience=audience,
                location=scatter(rng, row["lng"], row["lat"], 12),
            )
            site_id = await sites.create_site(ctx, new)
            site_docs[county].append(
                {
                    "_id": site_id,
                    "org_id": county,
                    "audience": audience,
                    "location": new.location.to_geojson(),
                }
            )
    project_ids = [
        await projects.create_project(
            ctx,
            projects.NewProject(name=f"科普项目{n + 1}", org_id=str(rng.choice(city_ids))),
            created_by=None,
        )
        for n in range(scale.projects)
    ]
    return _Tree(root, counties, teams, site_docs, project_ids)


async def _volunteers(ctx, scale: Scale, rng: random.Random, progress) -> list[ObjectId]:
    people = []
    for first in range(0, scale.volunteers, USERS_CHUNK):
        batch = [
            (f"seed_{scale.seed}_{n}", rng.choice(SURNAMES) + "".join(rng.sample(GIVEN, 2)))
            for n in range(first, min(first + USERS_CHUNK, scale.volunteers))
        ]
        people += await identity.import_users(ctx, batch)
        progress(len(batch))
    return people


def _members(rng: random.Random, pool: list[ObjectId], k: int) -> list[ObjectId]:
    """k distinct volunteers of a team, the keen ones (front of the list) chosen more often."""
    chosen: dict[ObjectId, None] = {}
    while len(chosen) < min(k, len(pool)):
        chosen[pool[int(len(pool) * rng.random() ** 2)]] = None
    return list(chosen)


async def _activities(ctx, scale: Scale, rng, tree: _Tree, people, progress) -> dict:
    pools: dict[ObjectId, list[ObjectId]] = defaultdict(list)
    for n, person in enumerate(people):
        pools[tree.teams[n % len(tree.teams)][0]].append(person)
    now = ctx.clock.now()
    first_day = date(scale.year, 1, 1)
    days = (date(scale.year, 12, 31) - first_day).days + 1
    written = {"activities": 0, "signups": 0, "hours_records": 0}
    for first in range(0, scale.activities, CHUNK):
        docs, records, credits = [], [], []
        for _ in range(min(CHUNK, scale.activities - first)):
            team, county = rng.choice(tree.teams)
            day = first_day + timedelta(days=rng.randrange(days))
            starts_at = datetime(day.year, day.month, day.day, rng.randint(8, 15), tzinfo=SHANGHAI)
            ends_at = starts_at + timedelta(hours=rng.choice((2, 2.5, 3, 4)))
            site = rng.choice(tree.sites[county]) if rng.random() < 0.8 else None
            crew = _members(rng, pools[team], rng.randint(5, 20))
            done = ends_at <= now
            doc = activities.activity_doc(
                ctx,
                title="科普志愿服务活动",
                description="",
                org_id=team,
                project_id=rng.choice(tree.projects) if rng.random() < 0.5 else None,
                site_id=site["_id"] if site else None,
                location=site["location"] if site else None,  # as the single path does
                starts_at=starts_at,
                ends_at=ends_at,
                capacity=len(crew) + rng.randint(0, 10),
                created_by=None,
                status="finished" if done else "published",
                confirmed_count=len(crew),
            )
            if done:
                doc["beneficiaries"] = rng.randint(200, 1_800)
            docs.append(doc)
            window = {"starts_at": starts_at, "ends_at": ends_at}
            for person in crew:
                records.append(
                    signups.new_record(doc["_id"], person, "confirmed", window, None, now)
                )
                if done:
                    credits.append(
                        hours.credit_doc(
                            ctx,
                            user_id=person,
                            hours=(ends_at - starts_at).seconds / 3600,
                            org_id=team,
                            source="activity",
                            activity_id=doc["_id"],
                            site_id=doc["site_id"],
                            served_at=starts_at,
                            status="confirmed" if rng.random() < 0.95 else "pending",
                        )
                    )
        written["activities"] += await activities.import_activities(ctx, docs)
        written["signups"] += await signups.import_signups(ctx, records)
        written["hours_records"] += await hours.import_credits(ctx, credits)
        progress(len(docs))
    return written


async def _trips(ctx, scale: Scale, rng: random.Random, tree: _Tree, progress) -> int:
    """One caravan (and depot) for every two counties; trips on distinct days per caravan."""
    fleet = []
    for n, county in enumerate(tree.counties[::2]):
        site = tree.sites[county][0]
        here = await sites.get_site_doc(ctx, site["_id"])
        lng, lat = here["location"]["coordinates"]
        depot = await caravans.create_depot(
            ctx,
            caravans.NewDepot(
                name=f"大篷车车场{n + 1}",
                org_id=str(county),
                location=sites.LocationIn(lng=lng, lat=lat),
            ),
        )
        caravan_id = await caravans.create_caravan(
            ctx,
            caravans.NewCaravan(
                name=f"科普大篷车{n + 1}号",
                plate=f"豫A{scale.seed % 10}K{n:03d}",
                vehicle_type="II",
                depot_id=str(depot),
                org_id=str(county),
            ),
        )
        fleet.append((await caravans.get_caravan_doc(ctx, caravan_id), county))
    today = ctx.clock.local_now().date()
    last = min(date(scale.year, 12, 31), today - timedelta(days=1))
    days = (last - date(scale.year, 1, 1)).days + 1
    used: set[tuple] = set()
    trips = []
    while len(trips) < scale.trips and days > 0:
        caravan, county = rng.choice(fleet)
        day = date(scale.year, 1, 1) + timedelta(days=rng.randrange(days))
        if (caravan["_id"], day) in used:
            continue
        used.add((caravan["_id"], day))
        start_km = rng.uniform(1_000, 90_000)
        visits = [
            (site, rng.randint(300, 1_000))
            for site in rng.sample(tree.sites[county], rng.randint(1, 2))
        ]
        trips.append(
            caravans.PastTrip(
                caravan=caravan,
                date=day,
                odometer_start_km=start_km,
                odometer_end_km=start_km + rng.randint(30, 150),
                visits=visits,
            )
        )
    count = await caravans.import_trips(ctx, trips)
    progress(count)
    return count
