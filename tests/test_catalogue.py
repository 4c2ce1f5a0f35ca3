"""Discovery from memory (server/domain/catalogue.py): pages equal to the database query's on
random data, changes seen at once in the process and within a second in another."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime, timedelta, timezone

import msgspec
import numpy as np
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server import geo
from server.context import Context
from server.db import aggregate
from server.domain import activities, catalogue, discovery, orgs, signups
from server.domain.catalogue import Catalogue
from server.domain.errors import Conflict
from server.domain.ids import parse_id
from server.domain.paging import decode_cursor, encode_cursor
from server.domain.sites import LocationIn
from server.domain.wiring import wire

pytestmark = pytest.mark.timeout(600)

HOME = (113.65, 34.76)
SITES = [HOME, (113.70, 34.80), (113.40, 34.60), (113.99, 35.05)]  # shared places: distance ties
TAGS = ["天文", "生物", "物理", activities.CARAVAN_TAG]
MAX_PAGES = 80
STATUSES = ["draft", "published", "published", "published", "ongoing", "finished", "cancelled"]


async def reference(ctx, *, start, end, near, coord_type="wgs84", radius_km, tag, org_id, cursor,
                    limit):  # fmt: skip
    """Discovery as the database answers it: the query discovery made before the catalogue,
    with ties in distance ordered by start time and id (before, they came in storage order)."""
    now = ctx.clock.now()
    query: dict = {"status": {"$in": ["published", "ongoing"]}, "ends_at": {"$gt": now}}
    if start:
        query["starts_at"] = {"$gte": start}
    if end:
        query.setdefault("starts_at", {})["$lt"] = end
    if tag:
        query["tags"] = tag
    if org_id:
        query["org_id"] = {"$in": await orgs.subtree_ids(ctx, parse_id(org_id, "org_id"))}
    coll = ctx.db["activities"]
    if near is not None:
        skip = decode_cursor(cursor, discovery.NearCursor)
        offset = skip.o if skip else 0
        near = geo.to_wgs84(*geo.geojson_point(*near)["coordinates"], coord_type)
        geo_near = {"near": {"type": "Point", "coordinates": list(near)}, "query": query,
                    "distanceField": "distance_m", "maxDistance": radius_km * 1000,
                    "spherical": True}  # fmt: skip
        docs = await aggregate(
            coll,
            [
                {"$geoNear": geo_near},
                {"$sort": {"distance_m": 1, "starts_at": 1, "_id": 1}},
                {"$skip": offset},
                {"$limit": limit + 1},
            ],
        )
        more = len(docs) > limit and offset + limit <= discovery.MAX_OFFSET
        following = discovery.NearCursor(o=offset + limit) if more else None
    else:
        if position := decode_cursor(cursor, discovery.StartCursor):
            query["$or"] = [
                {"starts_at": {"$gt": position.s}},
                {"starts_at": position.s, "_id": {"$gt": position.i}},
            ]
        docs = await coll.find(query).sort([("starts_at", 1), ("_id", 1)]).to_list(limit + 1)
        last = docs[limit - 1] if len(docs) > limit else None
        following = discovery.StartCursor(s=last["starts_at"], i=last["_id"]) if last else None
    return discovery.ActivityPage(
        items=[discovery._item_out(d, now, coord_type) for d in docs[:limit]],
        next_cursor=encode_cursor(following) if following else None,
        coord_type=coord_type,
    )


async def _tree(ctx) -> list[ObjectId]:
    """A province, two cities, a county under each and a team under one: made once per test."""
    if root := await orgs.root_org(ctx):
        return [d["_id"] async for d in ctx.db.orgs.find({}, {"_id": 1}).sort("_id", 1)]
    root = await orgs.create_org(ctx, "省科协", "province", None)
    made = [root]
    for name in ("郑州", "新乡"):
        city = await orgs.create_org(ctx, f"{name}市科协", "city", root)
        county = await orgs.create_org(ctx, f"{name}县科协", "county", city)
        made += [city, county]
    made.append(await orgs.create_org(ctx, "天文志愿服务队", "team", made[-1]))
    return made


SHARED_H = [24, 48, 100 * 24]
"""Start times many activities share, and query bounds fall on: ties, and bounds that hold."""
HOURS = st.one_of(  # some ended, some under way, some months ahead
    st.sampled_from(SHARED_H), st.integers(-72, 72), st.integers(-72, 150 * 24)
)


def _at(delta) -> tuple[float, float]:
    return round(HOME[0] + delta[0], 6), round(HOME[1] + delta[1], 6)


OFFSET = st.tuples(st.floats(-0.5, 0.5), st.floats(-0.45, 0.45))  # about 50 km around HOME
PLACE = st.one_of(st.none(), st.sampled_from(SITES), OFFSET.map(_at))
ACTIVITY = st.fixed_dictionaries(
    {
        "place": PLACE,
        "start_h": HOURS,
        "hours": st.integers(1, 96),
        "status": st.sampled_from(STATUSES),
        "tags": st.lists(st.sampled_from(TAGS), max_size=3, unique=True),
        "org": st.integers(0, 5),
    }
)
MOMENT = st.one_of(
    st.none(),
    st.none(),
    st.tuples(
        st.one_of(HOURS, st.integers(0, 39).map(lambda n: ("start of", n))),
        st.one_of(st.sampled_from([0, 999]), st.integers(0, 999_999)),  # µs: truncated, equal
        st.sampled_from([0, 8]),
    ),
)
QUERY = st.fixed_dictionaries(
    {
        "near": st.one_of(st.none(), st.none(), st.sampled_from(SITES), OFFSET.map(_at)),
        "coord_type": st.sampled_from(["wgs84", "wgs84", "gcj02"]),
        "radius_km": st.one_of(
            st.sampled_from([1.0, 5.0, 20.0, 500.0]),
            st.floats(0.5, 80),
            st.tuples(st.integers(0, 39), st.sampled_from([1 - 1e-9, 1 + 1e-9])),  # a tight cut
        ),
        "from": MOMENT,
        "to": st.one_of(st.none(), MOMENT),
        "tag": st.one_of(st.none(), st.none(), st.sampled_from([*TAGS, "化学"])),
        "org": st.one_of(st.none(), st.integers(-1, 5)),
        "limit": st.integers(1, 7),
    }
)
CHANGE = st.tuples(st.sampled_from(["publish", "cancel"]), st.integers(0, 39))


def _moment(base: datetime, specs: list[dict], spec) -> datetime | None:
    """A query bound: hours from the base, or an activity's start (the bound holds exactly)."""
    if spec is None:
        return None
    hours, micros, offset_h = spec
    if isinstance(hours, tuple):
        hours = specs[hours[1] % len(specs)]["start_h"] if specs else 0
    moment = base + timedelta(hours=hours, microseconds=micros)
    return moment.astimezone(timezone(timedelta(hours=offset_h)))


def _radius_km(q: dict, specs: list[dict]) -> float:
    """The radius asked for, or one just short of or just past an activity's distance."""
    radius = q["radius_km"]
    if not isinstance(radius, tuple):
        return radius
    n, factor = radius
    places = [s["place"] for s in specs if s["place"] and s["status"] in ("published", "ongoing")]
    if not places or q["near"] is None:
        return 20.0
    lng, lat = places[n % len(places)]
    near = geo.to_wgs84(*q["near"], q["coord_type"])
    return catalogue.distance_m(*near, lng, lat) * factor / 1000


async def _load(ctx, base: datetime, specs: list[dict], tree: list[ObjectId]) -> list[ObjectId]:
    docs = []
    for spec in specs:
        starts = base + timedelta(hours=spec["start_h"])
        place = spec["place"]
        docs.append(
            activities.activity_doc(
                ctx, title="科学实验秀", description="带领小学生动手做实验",
                org_id=tree[spec["org"]], starts_at=starts,
                ends_at=starts + timedelta(hours=spec["hours"]), capacity=30, created_by=None,
                location=LocationIn(lng=place[0], lat=place[1]).to_geojson() if place else None,
                tags=spec["tags"], status=spec["status"],
            )
        )  # fmt: skip
    await activities.import_activities(ctx, docs)
    return [d["_id"] for d in docs]


def _args(base: datetime, specs: list[dict], q: dict, tree: list[ObjectId]) -> dict:
    org = q["org"]
    start, end = _moment(base, specs, q["from"]), _moment(base, specs, q["to"])
    if start and end and end < start:
        start, end = end, start
    return {
        "start": start,
        "end": end,
        "near": q["near"],
        "coord_type": q["coord_type"],
        "radius_km": _radius_km(q, specs),
        "tag": q["tag"],
        "org_id": None if org is None else str(tree[org] if org >= 0 else ObjectId()),
        "limit": q["limit"],
    }


async def _same_pages(ctx, args: dict) -> None:
    """Every page, following the cursors, the same from the catalogue as from the database."""
    cursor = None
    for _ in range(MAX_PAGES):
        ours = await discovery.discover(ctx, **args, cursor=cursor)
        theirs = await reference(ctx, **args, cursor=cursor)
        assert msgspec.to_builtins(ours) == msgspec.to_builtins(theirs), (args, cursor)
        cursor = ours.next_cursor
        if cursor is None:
            return
    raise AssertionError(f"more than {MAX_PAGES} pages: {args}")


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    specs=st.integers(3, 40).flatmap(lambda n: st.lists(ACTIVITY, min_size=n, max_size=n)),
    queries=st.lists(QUERY, min_size=2, max_size=5),
    changes=st.lists(CHANGE, max_size=4),
    held=st.sampled_from([catalogue.MAX_HELD, 0, 3, 10]),
    later_h=st.sampled_from([0, 0, 1, 30]),
)  # fmt: skip
async def test_pages_equal_the_database_query(
    ctx, monkeypatch, specs, queries, changes, held, later_h
):
    monkeypatch.setattr(catalogue, "MAX_HELD", held)  # small: the rest is past the horizon
    tree = await _tree(ctx)
    await ctx.db.activities.delete_many({})
    base = ctx.clock.now()  # activities and query bounds in whole hours from here
    ids = await _load(ctx, base, specs, tree)
    ctx.catalogue = Catalogue()  # a process starting: a cold load, then events keep it
    await _same_pages(ctx, _args(base, specs, queries[0], tree))
    for kind, n in changes:
        if not ids:
            break
        activity_id = ids[n % len(ids)]
        try:
            if kind == "publish":
                await activities.publish(ctx, activity_id, publisher_openid="o_catalogue")
            else:
                await signups.cancel_activity(ctx, activity_id, reason="暴雨")
        except Conflict:
            pass  # not a draft, ended: the domain refuses, the catalogue sees no change
    ctx.clock.advance(later_h * 3600)  # time passes: some end, some start
    for q in queries:
        await _same_pages(ctx, _args(base, specs, q, tree))


async def _activity(ctx, org, *, starts_in_h=48, hours=3, place=HOME, publish=True, **extra):
    starts = ctx.clock.now() + timedelta(hours=starts_in_h)
    new = activities.NewActivity(
        title="走进科技馆", description="带领小学生参观科技馆", org_id=str(org), starts_at=starts,
        ends_at=starts + timedelta(hours=hours), capacity=extra.pop("capacity", 30),
        location=LocationIn(lng=place[0], lat=place[1]), **extra,
    )  # fmt: skip
    activity_id = await activities.create_activity(ctx, new, created_by=None)
    if publish:
        await activities.publish(ctx, activity_id, publisher_openid="o_catalogue")
    return activity_id


async def _near_me(ctx, **extra) -> dict[str, discovery.ActivityItem]:
    page = await discovery.discover(
        ctx, start=None, end=None, near=HOME, radius_km=30, tag=None, org_id=None, cursor=None,
        limit=100, **extra,
    )  # fmt: skip
    return {item.id: item for item in page.items}


async def test_changes_show_at_once_in_the_process(ctx, monkeypatch):
    monkeypatch.setattr(catalogue, "CHECK_S", 3600.0)  # no version checks: the bus alone
    [root, *_] = await _tree(ctx)
    assert await _near_me(ctx) == {}  # the catalogue is built: what follows are changes to it
    first = await _activity(ctx, root, capacity=30)
    soon_over = await _activity(ctx, root, starts_in_h=1, hours=2)
    draft = await _activity(ctx, root, publish=False)
    seen = await _near_me(ctx)
    assert set(seen) == {str(first), str(soon_over)}
    assert seen[str(first)].capacity == 30 and seen[str(first)].distance_km == 0

    await signups.change_capacity(ctx, first, 12, "refuse")
    assert (await _near_me(ctx))[str(first)].capacity == 12
    await activities.publish(ctx, draft, publisher_openid="o_catalogue")
    assert str(draft) in await _near_me(ctx)
    await signups.cancel_activity(ctx, first, reason="暴雨")
    assert str(first) not in await _near_me(ctx)

    ctx.clock.advance(3 * 3600)  # time passes: the short one has ended
    assert set(await _near_me(ctx)) == {str(draft)}

    # A write that announced nothing: the document read for the page is believed.
    await ctx.db.activities.update_one({"_id": draft}, {"$set": {"status": "cancelled"}})
    assert await _near_me(ctx) == {}

    # A bulk load announces nothing either, until the loader says so.
    monkeypatch.setattr(catalogue, "CHECK_S", 1.0)
    [loaded] = await _load(ctx, ctx.clock.now(), [{"place": HOME, "start_h": 5, "hours": 2,
                                                    "status": "published", "tags": [], "org": 0}],
                           [root])  # fmt: skip
    await ctx.catalogue.invalidate(ctx)
    await asyncio.sleep(catalogue.CHECK_S + 0.05)
    assert set(await _near_me(ctx)) == {str(loaded)}


async def test_a_bounded_catalogue_reads_what_lies_past_its_horizon(ctx, monkeypatch):
    monkeypatch.setattr(catalogue, "MAX_HELD", 1)
    [root, *_] = await _tree(ctx)
    first = await _activity(ctx, root, starts_in_h=24)
    await _activity(ctx, root, starts_in_h=72, place=SITES[1])
    ctx.catalogue = Catalogue()
    assert len(await _near_me(ctx)) == 2  # one held, the horizon at the second's start
    later = await _activity(ctx, root, starts_in_h=96, place=SITES[1])  # past it: not held
    sooner = await _activity(ctx, root, starts_in_h=30)  # before it: held
    for near in (HOME, None):
        for limit in (1, 2, 10):
            await _same_pages(
                ctx, {"start": None, "end": None, "near": near, "radius_km": 30, "tag": None,
                      "org_id": None, "limit": limit},
            )  # fmt: skip
    assert set(await _near_me(ctx)) >= {str(first), str(later), str(sooner)}


async def test_another_process_sees_a_publication_within_a_second(ctx, monkeypatch):
    [root, *_] = await _tree(ctx)
    other = await Context.start(ctx.settings)  # a second process on the same database
    try:
        await wire(other, recover_plans=False)
        assert await _near_me(other) == {}
        activity_id = await _activity(ctx, root)
        began = time.monotonic()
        while str(activity_id) not in await _near_me(other):
            assert time.monotonic() - began < 1.5, "not seen within a second"
            await asyncio.sleep(0.05)
        # Counters and cancellations are read with the page: at once, no waiting.
        await signups.change_capacity(ctx, activity_id, 7, "refuse")
        assert (await _near_me(other))[str(activity_id)].capacity == 7
        await signups.cancel_activity(ctx, activity_id, reason="停电")
        assert str(activity_id) not in await _near_me(other)

        # Behind by more than the log keeps: the other process reloads everything.
        monkeypatch.setattr(catalogue, "LOG_LENGTH", 2)
        made = {str(await _activity(ctx, root, starts_in_h=50 + i)) for i in range(3)}
        await asyncio.sleep(catalogue.CHECK_S + 0.05)
        assert set(await _near_me(other)) == made
    finally:
        await other.close()


def test_one_pick_over_a_province_year_is_fast():
    """Selection alone over 11,425 activities (no database): well under a couple of ms."""
    rng = np.random.default_rng(7)
    n, now = 11_425, 1_800_000_000_000
    org = ObjectId()
    entries = [
        catalogue.Entry(
            starts_ms=int(s), key=(oid := ObjectId()).binary, id=oid, ends_ms=int(s) + 7_200_000,
            lng=float(x), lat=float(y), tags=(TAGS[int(t)],), org_id=org, org_key=org.binary,
        )
        for s, x, y, t in zip(
            rng.integers(now, now + 89 * 86_400_000, n), rng.uniform(110.3, 116.6, n),
            rng.uniform(31.4, 36.4, n), rng.integers(0, len(TAGS), n), strict=True,
        )
    ]  # fmt: skip
    arrays = catalogue.Arrays(entries, {org: (org,)})

    def near_me():
        keep = arrays.mask(now, None, None, None, None)
        return arrays.nearest(keep, 113.65, 34.76, 20_000.0, 21)

    def by_tag_and_org():
        keep = arrays.mask(now, now, now + 7 * 86_400_000, TAGS[0], org)
        return np.flatnonzero(keep)[:21]

    for pick in (near_me, by_tag_and_org):
        pick()
        took = []
        for _ in range(200):
            began = time.perf_counter()
            pick()
            took.append(time.perf_counter() - began)
        assert statistics.median(took) < 0.002, (pick.__name__, statistics.median(took))
