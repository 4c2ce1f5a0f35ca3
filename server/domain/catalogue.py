"""Discovery's read model: the activities the mini-program can list, held in each process, so a
page is picked without asking the database which activities match (server/domain/discovery.py
then reads the picked documents by `_id` and answers from them).

Owns the `catalogue_version` collection; reads `activities` and, through `orgs`, the org tree.

What it holds. The listable activities are those published or ongoing whose `ends_at` is after
now: the first MAX_HELD of them in start order (a province's year is some 11,000, so normally all),
as numpy arrays sorted by (starts_at, _id): start and end (epoch ms), longitude, latitude in
radians and its cosine, and index lists by tag and by organisation (every organisation of the
activity's lineage, so an org filter matches the org's whole subtree). Should there be more, the
start time of the first one left out is the horizon: a query reaching past it (no `to`, or `to`
after it) reads the part past it from the database (the same filter with `starts_at >= horizon`,
on the status/starts index) and merges it in, so the bound limits memory and never changes an
answer. (The bound is a count, not a time such as 90 days ahead: nearest first cannot know that
nothing past a time window is nearer, so every near-me query would read the database whenever
anything is published further ahead, as in a seeded year, three quarters of it.) Ended activities
drop out by the clock at query time. Nothing that changes with a sign-up is held: counters,
capacity and the status as the clock moves it come from the documents discovery reads, and if a
picked document no longer matches what is held (changed by another process a moment ago), the
catalogue takes the document's word and discovery picks again.

Order. By time: (starts_at, _id), as the database sorts. Nearest first: distance, then
(starts_at, _id), so activities at one site page stably. Distance is the haversine $geoNear
computes, on its earth radius (6,378,100 m, MongoDB's and SecantusDB's): vectorised to choose
(equal to the database's to the last bit or so) and, for the page shown, computed as SecantusDB
does, operation for operation, so `distance_km` is the database's.

Refresh. In this process the bus's ACTIVITY_PUBLISHED / _CHANGED / _CANCELLED re-read the one
activity at once (`register`, wired by `server.domain.wiring`) and bump the version document
(`{_id: "activities", v, log}`: `v` counts changes, `log` keeps the last LOG_LENGTH activity
ids). Other processes read it at most once a CHECK_S on a query and re-read the ids they missed
(everything, if they missed more than the log holds). Writes that announce no event (bulk loads
through `activities.import_activities`) show at the next full reload, every RELOAD_S, or within a
second of `invalidate`. A cold start is one indexed query.
"""

from __future__ import annotations

import asyncio
import math
from bisect import bisect_right
from datetime import datetime
from typing import NamedTuple

import numpy as np
from bson import ObjectId
from bson.datetime_ms import DatetimeMS
from pymongo.errors import DuplicateKeyError

from server.domain import events, orgs

MAX_HELD = 50_000
CHECK_S = 1.0
RELOAD_S = 1800.0
LOG_LENGTH = 512
LISTED = ["published", "ongoing"]
VERSIONS = "catalogue_version"
EARTH_RADIUS_M = 6_378_100.0
"""The radius $geoNear measures on (MongoDB's kRadiusOfEarthInMeters; SecantusDB's too), not the
mean radius server.geo uses: distances must be the database's."""
FIELDS = {"status": 1, "starts_at": 1, "ends_at": 1, "location": 1, "tags": 1, "org_id": 1}
"""What the catalogue reads of an activity; a picked document is checked against these."""
_NO_INDEX = np.zeros(0, dtype=np.int64)

Pick = tuple[ObjectId, float | None]
"""An activity chosen for a page, and its distance in metres when nearest first."""


def ms(moment: datetime) -> int:
    """Epoch milliseconds, truncated as the driver truncates a datetime it sends."""
    return int(DatetimeMS(moment))


class Entry(NamedTuple):
    starts_ms: int
    key: bytes  # the _id's bytes: ObjectIds order as their bytes do
    id: ObjectId
    ends_ms: int
    lng: float | None  # None: no place, never near anything (as $geoNear skips it)
    lat: float | None
    tags: tuple[str, ...]
    org_id: ObjectId | None
    org_key: bytes  # its bytes (b"" for none): grouped by, at C speed


_KEY = np.dtype([("hi", ">u8"), ("lo", ">u4")])  # an ObjectId's 12 bytes as two sortable numbers


def _lnglat(doc: dict) -> tuple[float, float] | tuple[None, None]:
    location = doc.get("location")
    if isinstance(location, dict) and location.get("type") == "Point":
        point = location.get("coordinates")
        if isinstance(point, list) and len(point) == 2:
            return float(point[0]), float(point[1])
    return None, None


def entry(doc: dict) -> Entry:
    lng, lat = _lnglat(doc)
    tags = doc.get("tags")
    return Entry(
        starts_ms=ms(doc["starts_at"]),
        key=doc["_id"].binary,
        id=doc["_id"],
        ends_ms=ms(doc["ends_at"]),
        lng=lng,
        lat=lat,
        tags=tuple(dict.fromkeys(tags)) if isinstance(tags, list) else (),
        org_id=(org := doc.get("org_id")),
        org_key=org.binary if isinstance(org, ObjectId) else b"",
    )


def listed(doc: dict | None, now_ms: int) -> bool:
    return doc is not None and doc.get("status") in LISTED and ms(doc["ends_at"]) > now_ms


def haversine_m(lngs, phis, cos_phis, lng: float, lat: float) -> np.ndarray:
    """Metres from (lng, lat) to each point: the haversine of `distance_m`, vectorised (numpy
    squares by multiplying where Python calls pow, so the two may differ in the last bit)."""
    phi = math.radians(lat)
    h = (
        np.sin((phi - phis) / 2.0) ** 2
        + cos_phis * math.cos(phi) * np.sin(np.radians(lng - lngs) / 2.0) ** 2
    )
    return 2.0 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))) * EARTH_RADIUS_M


def distance_m(lng: float, lat: float, doc_lng: float, doc_lat: float) -> float:
    """Metres from (lng, lat) to a document's point, computed as $geoNear computes it (SecantusDB:
    the document first, these operations in this order), so `distance_km` is the database's."""
    phi_a, phi_b = math.radians(doc_lat), math.radians(lat)
    h = (
        math.sin((phi_b - phi_a) / 2.0) ** 2
        + math.cos(phi_a) * math.cos(phi_b) * math.sin(math.radians(lng - doc_lng) / 2.0) ** 2
    )
    return 2.0 * math.asin(math.sqrt(min(max(h, 0.0), 1.0))) * EARTH_RADIUS_M


def _groups(values: list, positions: np.ndarray):
    """(value, the positions beside it) for each distinct value."""
    codes: dict = {}
    code = np.array([codes.setdefault(v, len(codes)) for v in values], dtype=np.int64)
    grouped = np.argsort(code, kind="stable")
    bounds = np.searchsorted(code[grouped], np.arange(len(codes) + 1)).tolist()
    for value, i in codes.items():
        yield value, positions[grouped[bounds[i] : bounds[i + 1]]]


class Arrays:
    """One immutable snapshot of what is held, sorted by (starts_at, _id)."""

    def __init__(self, entries: list[Entry], lineage: dict[ObjectId, tuple[ObjectId, ...]]):
        """Column by column, vectorised where it can be: some 10 ms for 11,000 activities."""
        n = len(entries)
        cols = list(zip(*entries, strict=True)) if entries else [()] * len(Entry._fields)
        c = dict(zip(Entry._fields, cols, strict=True))
        starts = np.array(c["starts_ms"], dtype=np.int64)
        halves = np.frombuffer(b"".join(c["key"]), dtype=_KEY)
        order = np.lexsort((halves["lo"], halves["hi"], starts))
        rank = np.empty(n, dtype=np.int64)  # where each entry lands in that order
        rank[order] = np.arange(n)
        sorted_at = order.tolist()
        self.ids = [c["id"][i] for i in sorted_at]
        self.keys = [c["key"][i] for i in sorted_at]
        self.starts = starts[order]
        self.ends = np.array(c["ends_ms"], dtype=np.int64)[order]
        self.lng = np.array(c["lng"], dtype=np.float64)[order]  # None (no place) becomes NaN
        self.lat = np.array(c["lat"], dtype=np.float64)[order]
        self.phi = np.radians(self.lat)
        self.cos_phi = np.cos(self.phi)
        self.by_tag = {
            tag: np.sort(at)
            for tag, at in _groups([t for tags in c["tags"] for t in tags],
                                   np.repeat(rank, [len(tags) for tags in c["tags"]]))
        }  # fmt: skip
        by_org: dict[ObjectId, list[np.ndarray]] = {}
        for key, members in _groups(c["org_key"], rank):
            for org in lineage.get(ObjectId(key), ()) if key else ():
                by_org.setdefault(org, []).append(members)
        self.by_org = {org: np.sort(np.concatenate(parts)) for org, parts in by_org.items()}

    def mask(self, now_ms, start_ms, end_ms, tag, org) -> np.ndarray:
        keep = self.ends > now_ms
        if start_ms is not None:
            keep &= self.starts >= start_ms
        if end_ms is not None:
            keep &= self.starts < end_ms
        for index, value in ((self.by_tag, tag), (self.by_org, org)):
            if value is not None:
                member = np.zeros(len(keep), dtype=bool)
                member[index.get(value, _NO_INDEX)] = True
                keep &= member
        return keep

    def after(self, s_ms: int, key: bytes) -> int:
        """Index of the first activity after (s, id) in (starts_at, _id) order."""
        lo = int(np.searchsorted(self.starts, s_ms, "left"))
        hi = int(np.searchsorted(self.starts, s_ms, "right"))
        return bisect_right(self.keys, key, lo, hi)

    def nearest(self, keep: np.ndarray, lng: float, lat: float, max_m: float, k: int):
        """The first k within max_m of (lng, lat): indices and metres, nearest first, ties in
        (starts_at, _id) order."""
        # A latitude band first: the haversine angle is never less than the latitude difference.
        band = max_m / EARTH_RADIUS_M * (1 + 1e-9) + 1e-12
        cand = np.flatnonzero(keep & (np.abs(self.phi - math.radians(lat)) <= band))
        d = haversine_m(self.lng[cand], self.phi[cand], self.cos_phi[cand], lng, lat)
        inside = d <= max_m
        cand, d = cand[inside], d[inside]
        if k < len(d):
            kth = np.partition(d, k - 1)[k - 1]
            cand, d = cand[d <= kth], d[d <= kth]  # ties at the k-th stay for the tie-break
        order = np.argsort(d, kind="stable")[:k]  # candidates come in (starts_at, _id) order
        return cand[order], d[order]


class Catalogue:
    """The read model on the context (`ctx.catalogue`), built on first use."""

    def __init__(self) -> None:
        self._entries: dict[ObjectId, Entry] = {}
        self._loaded = False
        self._horizon: datetime | None = None  # None: every listable activity is held
        self._lineage: dict[ObjectId, tuple[ObjectId, ...]] = {}
        self._arrays: Arrays | None = None
        self._version = 0
        self._loaded_at = self._checked_at = -math.inf
        self._lock = asyncio.Lock()

    # -- answering ------------------------------------------------------------------------------

    async def pick(
        self,
        ctx,
        *,
        now: datetime,
        start: datetime | None,
        end: datetime | None,
        tag: str | None,
        org: ObjectId | None,
        near: tuple[float, float] | None,
        radius_m: float = 0.0,
        offset: int = 0,
        after: tuple[datetime, ObjectId] | None = None,
        count: int,
    ) -> list[Pick]:
        """Up to `count` activities of one page: nearest first from `offset` when `near` is
        given, otherwise by start time after the position `after`."""
        await self.refresh(ctx)
        arrays, horizon = self.arrays(ms(now)), self._horizon
        keep = arrays.mask(
            ms(now), ms(start) if start else None, ms(end) if end else None, tag, org
        )
        beyond = horizon is not None and (end is None or ms(end) > ms(horizon))
        if near is not None:
            lng, lat = near
            idx, dist = arrays.nearest(keep, lng, lat, radius_m, offset + count)
            if beyond:
                far = await self._far(ctx, now, start, end, tag, org, horizon, {"location": 1})
                rows = _merge_near(arrays, idx, dist, far, lng, lat, radius_m)
                rows = rows[offset : offset + count]
            else:
                rows = [
                    (arrays.ids[i], float(arrays.lng[i]), float(arrays.lat[i]))
                    for i in idx[offset:].tolist()
                ]
            return [(i, distance_m(lng, lat, x, y)) for i, x, y in rows]
        pos = arrays.after(ms(after[0]), after[1].binary) if after else 0
        idx = np.flatnonzero(keep[pos:])[:count] + pos
        picks = [(arrays.ids[i], None) for i in idx.tolist()]
        if beyond and len(picks) < count:
            # Everything past the horizon sorts after everything held.
            extra: dict = {}
            if after:
                s, i = after
                extra["$or"] = [{"starts_at": {"$gt": s}}, {"starts_at": s, "_id": {"$gt": i}}]
            far = await self._far(ctx, now, start, end, tag, org, horizon, {"_id": 1}, extra,
                                  limit=count - len(picks))  # fmt: skip
            picks += [(doc["_id"], None) for doc in far]
        return picks

    async def _far(self, ctx, now, start, end, tag, org, horizon, fields, extra=None, limit=0):
        """Listable activities starting at or past the horizon, from the database, by (starts_at,
        _id)."""
        starts: dict = {"$gte": max(start, horizon) if start else horizon}
        if end:
            starts["$lt"] = end
        query: dict = {"status": {"$in": LISTED}, "ends_at": {"$gt": now}, "starts_at": starts}
        if tag is not None:
            query["tags"] = tag
        if org is not None:
            query["org_id"] = {"$in": await orgs.subtree_ids(ctx, org)}
        cursor = ctx.db["activities"].find({**query, **(extra or {})}, {**fields, "starts_at": 1})
        return await cursor.sort([("starts_at", 1), ("_id", 1)]).limit(limit).to_list(None)

    async def confirm(self, ctx, now: datetime, picks: list[Pick], docs: dict) -> bool:
        """Whether the documents just read agree with what picked them at `now`; when one
        doesn't, the catalogue takes the document's word (the caller picks again)."""
        now_ms = ms(now)
        wrong = {}
        for activity_id, _ in picks:
            doc, held = docs.get(activity_id), self._entries.get(activity_id)
            if held is not None and not (listed(doc, now_ms) and entry(doc) == held):
                wrong[activity_id] = doc
        if wrong:
            await self._apply(ctx, wrong)
        return not wrong

    def arrays(self, now_ms: int) -> Arrays:
        """The snapshot, rebuilt after changes (the ended are let go then)."""
        if self._arrays is None:
            self._entries = {k: e for k, e in self._entries.items() if e.ends_ms > now_ms}
            self._arrays = Arrays(list(self._entries.values()), self._lineage)
        return self._arrays

    # -- keeping it fresh -----------------------------------------------------------------------

    async def refresh(self, ctx) -> None:
        """Load on first use; then, at most once a CHECK_S, follow the version document."""
        if not self._loaded:
            async with self._lock:
                if not self._loaded:
                    await self._load(ctx)
            return
        tick = asyncio.get_running_loop().time()
        reload = tick - self._loaded_at >= RELOAD_S
        if (reload or tick - self._checked_at >= CHECK_S) and not self._lock.locked():
            self._checked_at = tick  # one query checks; the others answer from what is held
            async with self._lock:
                await (self._load(ctx) if reload else self._follow(ctx))

    async def reload(self, ctx) -> None:
        async with self._lock:
            await self._load(ctx)

    async def changed(self, ctx, activity_id: ObjectId) -> None:
        """An activity was published, changed or cancelled in this process."""
        if self._loaded:
            doc = await ctx.db["activities"].find_one({"_id": activity_id}, FIELDS)
            await self._apply(ctx, {activity_id: doc})
        await _bump(ctx, {"$inc": {"v": 1}, "$push": {"log": {"$each": [activity_id],
                                                              "$slice": -LOG_LENGTH}}})  # fmt: skip

    async def invalidate(self, ctx) -> None:
        """After writes that announce no event (a bulk load): every process, this one too,
        reloads everything at its next check, within CHECK_S."""
        await _bump(ctx, {"$inc": {"v": LOG_LENGTH + 1}, "$set": {"log": []}})

    async def _load(self, ctx) -> None:
        version = await ctx.db[VERSIONS].find_one({"_id": "activities"}, {"v": 1})
        query = {"status": {"$in": LISTED}, "ends_at": {"$gt": ctx.clock.now()}}
        read = {"limit": MAX_HELD + 1, "batch_size": 10_000}
        docs = await ctx.db["activities"].find(query, FIELDS, **read).to_list(None)
        if len(docs) > MAX_HELD:  # more than are held: the first in start order (a slower read)
            first = [("starts_at", 1), ("_id", 1)]
            docs = await ctx.db["activities"].find(query, FIELDS, sort=first, **read).to_list(None)
        await self._learn_lineage(ctx, docs)
        horizon = docs[MAX_HELD]["starts_at"] if len(docs) > MAX_HELD else None
        edge = ms(horizon) if horizon else None
        held = (entry(doc) for doc in docs)
        self._entries = {e.id: e for e in held if edge is None or e.starts_ms < edge}
        self._horizon, self._arrays, self._loaded = horizon, None, True
        self._version = version["v"] if version else 0
        self._loaded_at = self._checked_at = asyncio.get_running_loop().time()

    async def _follow(self, ctx) -> None:
        version = await ctx.db[VERSIONS].find_one({"_id": "activities"}) or {"v": 0, "log": []}
        behind = version["v"] - self._version
        if behind == 0:
            return
        if not 0 < behind <= len(version["log"]):
            await self._load(ctx)  # missed more than the log keeps (or the database is new)
            return
        ids = list(set(version["log"][-behind:]))
        found = await ctx.db["activities"].find({"_id": {"$in": ids}}, FIELDS).to_list(None)
        by_id = {doc["_id"]: doc for doc in found}
        await self._apply(ctx, {i: by_id.get(i) for i in ids})
        self._version = version["v"]

    async def _apply(self, ctx, docs: dict[ObjectId, dict | None]) -> None:
        """These activities as they now are (None: gone). Without the lock: should a load or a
        follow read older documents meanwhile, it also read a version older than the bump that
        follows each change, so the next follow reads them again."""
        await self._learn_lineage(ctx, [d for d in docs.values() if d])
        now_ms = ms(ctx.clock.now())
        edge = ms(self._horizon) if self._horizon else None
        for activity_id, doc in docs.items():
            self._entries.pop(activity_id, None)
            if listed(doc, now_ms):
                held = entry(doc)
                if edge is None or held.starts_ms < edge:
                    self._entries[activity_id] = held
        self._arrays = None

    async def _learn_lineage(self, ctx, docs: list[dict]) -> None:
        """Each organisation's lineage, read once (organisations never move)."""
        unknown = {d.get("org_id") for d in docs} - self._lineage.keys() - {None}
        if unknown:
            found = await orgs.nodes(ctx, list(unknown))
            for org in unknown:
                self._lineage[org] = found[org].lineage if org in found else ()


def _merge_near(arrays, idx, dist, far, lng, lat, max_m) -> list[tuple]:
    """The nearest held (idx, dist) and those past the horizon within max_m (`far`, their
    documents) in one order: (id, lng, lat) of each."""
    points = [_lnglat(doc) for doc in far]
    lngs = np.array([x for x, _ in points], dtype=np.float64)  # None (no place): NaN, never near
    phis = np.radians(np.array([y for _, y in points], dtype=np.float64))
    far_dist = haversine_m(lngs, phis, np.cos(phis), lng, lat)
    ranked = [
        (d, int(arrays.starts[i]), arrays.keys[i], arrays.ids[i], arrays.lng[i], arrays.lat[i])
        for i, d in zip(idx.tolist(), dist.tolist(), strict=True)
    ]
    ranked += [
        (d, ms(doc["starts_at"]), doc["_id"].binary, doc["_id"], x, y)
        for doc, (x, y), d in zip(far, points, far_dist.tolist(), strict=True)
        if d <= max_m
    ]
    ranked.sort()
    return [(activity_id, float(x), float(y)) for _, _, _, activity_id, x, y in ranked]


async def _bump(ctx, change: dict) -> None:
    try:
        await ctx.db[VERSIONS].update_one({"_id": "activities"}, change, upsert=True)
    except DuplicateKeyError:  # two first bumps raced to create the document
        await ctx.db[VERSIONS].update_one({"_id": "activities"}, change, upsert=True)


async def _on_activity(ctx, kind: str, *, activity_id: ObjectId, **_: object) -> None:
    await ctx.catalogue.changed(ctx, activity_id)


def register(bus) -> None:
    for kind in (events.ACTIVITY_PUBLISHED, events.ACTIVITY_CHANGED, events.ACTIVITY_CANCELLED):
        bus.subscribe(kind, _on_activity)
