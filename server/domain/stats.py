"""Statistics: the association's year in numbers, for any organisation subtree and period.

Owns the roll-ups `stats_orgs`, `stats_volunteers`, `stats_sites` and `stats_projects`: one
document per (organisation, volunteer, site or project, calendar year). Every fact counts at its
own organisation and at each one above it, so a subtree's figures are one document however large
the subtree is; that is what keeps the provincial report fast on a database that scans slowly.
The domain events keep the roll-ups current; the nightly job recounts the year from the sources
(the hours ledger, the activities, the trip logs) and repairs any document that differs, with a
log line for each collection that did.

A report for a calendar year reads the roll-ups; any other period is recounted from the sources,
which is exact and slower.

What counts, on Asia/Shanghai dates:
- activities: published i科普 activities starting in the period and not cancelled (caravan visits
  count as caravan work instead); beneficiaries: the people they reached, as organisers reported;
- hours: confirmed hours served in the period, corrections included; volunteers: those with more
  than zero such hours;
- teams, bases and projects: those created before the period ends;
- caravan activities and beneficiaries: visits the sites confirmed; km: every logged trip.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import zip_longest

import msgspec
import structlog
from bson import ObjectId
from pymongo import DeleteOne, InsertOne, ReplaceOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from server.clock import SHANGHAI
from server.domain import activities, caravans, events, hours, identity, orgs, sites
from server.domain.errors import InvalidRequest, NotFound
from server.domain.ids import parse_id
from server.spreadsheets import Sheet, workbook

log = structlog.get_logger(__name__)

FIGURES = (
    "activities",
    "beneficiaries",
    "hours",
    "caravan_activities",
    "km",
    "caravan_beneficiaries",
)
OWNED_FIGURES = ("activities", "beneficiaries")  # of a site's or project's year
TOP = 10
EPSILON = 1e-6
ORGS, VOLUNTEERS, SITES, PROJECTS = (
    "stats_orgs",
    "stats_volunteers",
    "stats_sites",
    "stats_projects",
)


# -- periods ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    first: date
    last: date  # inclusive
    year: int | None  # a calendar year, served from the roll-ups

    @classmethod
    def calendar_year(cls, year: int) -> Period:
        if not 2000 <= year <= 2100:
            raise InvalidRequest("年份超出范围", field="year")
        return cls(date(year, 1, 1), date(year, 12, 31), year)

    @classmethod
    def between(cls, first: date, last: date) -> Period:
        if last < first:
            raise InvalidRequest("结束日期不能早于开始日期", field="to")
        if (last - first).days > 366 * 5:
            raise InvalidRequest("统计区间不能超过五年", field="to")
        whole_year = first == date(first.year, 1, 1) and last == date(first.year, 12, 31)
        return cls(first, last, first.year if whole_year else None)

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, datetime.min.time(), SHANGHAI)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), datetime.min.time(), SHANGHAI)

    def months(self) -> list[str]:
        keys, year, month = [], self.first.year, self.first.month
        while (year, month) <= (self.last.year, self.last.month):
            keys.append(f"{year:04d}-{month:02d}")
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return keys


def month_of(moment: datetime) -> str:
    local = moment.astimezone(SHANGHAI)
    return f"{local.year:04d}-{local.month:02d}"


# -- counting ---------------------------------------------------------------------------------


class Tally:
    """Figures of a set of facts, each counted at its organisation and every one above it.

    The nightly recount feeds it every fact of a year; an event feeds it one fact, and the
    difference is added to the stored roll-ups. Both go through the same `count_*` rules.
    """

    def __init__(self, nodes: dict[ObjectId, orgs.OrgNode]) -> None:
        self.nodes = nodes
        self.orgs: dict[ObjectId, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        # user → hours within each organisation above the ones they served in
        self.volunteers: dict[ObjectId, Counter] = defaultdict(Counter)
        self.sites: Counter = Counter()  # site → beneficiaries
        self.projects: dict[ObjectId, Counter] = defaultdict(Counter)

    def lineage(self, org_id: ObjectId) -> tuple[ObjectId, ...]:
        node = self.nodes.get(org_id)
        return node.lineage if node else (org_id,)

    def add(self, org_id: ObjectId, month: str, **figures: float) -> None:
        for org in self.lineage(org_id):
            self.orgs[org][month].update(figures)

    def count_activity(self, held: activities.HeldActivity, sign: int = 1) -> None:
        if held.caravan_visit:
            return  # counted as caravan work when the site confirms the visit
        self.reach(held, sign * held.beneficiaries)
        self.add(held.org_id, month_of(held.starts_at), activities=sign)
        if held.project_id:
            self.projects[held.project_id]["activities"] += sign

    def reach(self, held: activities.HeldActivity, people: int) -> None:
        if held.caravan_visit or not people:
            return
        self.add(held.org_id, month_of(held.starts_at), beneficiaries=people)
        if held.site_id:
            self.sites[held.site_id] += people
        if held.project_id:
            self.projects[held.project_id]["beneficiaries"] += people

    def count_hours(self, value: hours.CreditValue) -> None:
        self.add(value.org_id, month_of(value.served_at), hours=value.hours)
        for org in self.lineage(value.org_id):
            self.volunteers[value.user_id][org] += value.hours

    def count_trip(self, trip: caravans.TripFacts) -> None:
        self.add(trip.org_id, trip.date[:7], km=trip.km)
        for visit in trip.visits:
            if visit["confirmed"]:
                self.count_visit(trip.org_id, visit["site_id"], trip.date, visit["beneficiaries"])

    def count_visit(self, org_id: ObjectId, site_id: ObjectId, day: str, people: int) -> None:
        self.add(org_id, day[:7], caravan_activities=1, caravan_beneficiaries=people)
        self.sites[site_id] += people


async def _nodes_for(ctx, org_ids) -> dict[ObjectId, orgs.OrgNode]:
    """These organisations and all above them."""
    leaves = await orgs.nodes(ctx, list(set(org_ids)))
    above = {org for node in leaves.values() for org in node.lineage} - set(leaves)
    return leaves | (await orgs.nodes(ctx, list(above)) if above else {})


async def _recount(ctx, period: Period, within: ObjectId | None = None) -> Tally:
    """Every fact of the period from the sources (of the subtree of `within` when given).
    The subtree is filtered here rather than with $in, which is slow on long lists."""
    nodes = await orgs.nodes(ctx)
    tally = Tally(nodes)

    def inside(org_id: ObjectId) -> bool:
        return within is None or within in tally.lineage(org_id)

    for held in await activities.held_activities(ctx, period.start, period.end):
        if inside(held.org_id):
            tally.count_activity(held)
    async for value in hours.confirmed_entries(ctx, period.start, period.end):
        if inside(value.org_id):
            tally.count_hours(value)
    end_day = period.last + timedelta(days=1)
    for trip in await caravans.trip_facts(ctx, period.first, end_day):
        if inside(trip.org_id):
            tally.count_trip(trip)
    return tally


# -- roll-up documents ------------------------------------------------------------------------


def _key(*parts) -> str:
    return ":".join(str(p) for p in parts)


async def _documents(ctx, tally: Tally, year: int | None) -> dict[str, dict[str, dict]]:
    """The roll-up documents a tally stands for, by collection and _id."""
    serving: Counter = Counter()
    volunteers = {}
    for user_id, by_org in tally.volunteers.items():
        for org_id, value in by_org.items():
            if value > EPSILON:
                serving[org_id] += 1
            key = _key(user_id, org_id, year)
            volunteers[key] = {
                "_id": key,
                "user_id": user_id,
                "org_id": org_id,
                "year": year,
                "hours": value,
            }
    org_docs = {}
    for org_id in set(tally.orgs) | set(serving):
        months = tally.orgs.get(org_id, {})
        totals = Counter()
        for figures in months.values():
            totals.update(figures)
        node = tally.nodes.get(org_id)
        org_docs[_key(org_id, year)] = {
            "_id": _key(org_id, year),
            "org_id": org_id,
            "year": year,
            "kind": node.kind if node else None,
            "orgs": list(tally.lineage(org_id)),
            "totals": {**totals, "volunteers": serving[org_id]},
            "months": {month: dict(figures) for month, figures in months.items()},
        }
    site_docs, project_docs = await _owned_docs(ctx, tally, year)
    return {ORGS: org_docs, VOLUNTEERS: volunteers, SITES: site_docs, PROJECTS: project_docs}


async def _bulk(collection, operations: list) -> None:
    """Unordered bulk write; upserts that raced another process's upsert are tried again once
    (the second attempt finds the document and updates it)."""
    if not operations:
        return
    try:
        await collection.bulk_write(operations, ordered=False)
    except BulkWriteError as exc:
        raced = [operations[e["index"]] for e in exc.details["writeErrors"] if e["code"] == 11000]
        if len(raced) != len(exc.details["writeErrors"]):
            raise
        await collection.bulk_write(raced, ordered=False)


async def _apply(ctx, tally: Tally, year: int) -> None:
    """Add a tally of a few facts to the stored roll-ups of their year."""
    additions = [
        (org_id, _add_volunteer_hours(ctx, user_id, org_id, value, year))
        for user_id, by_org in tally.volunteers.items()
        for org_id, value in by_org.items()
        if value
    ]
    moves = await asyncio.gather(*(addition for _, addition in additions))
    volunteer_moves: Counter = Counter()
    for (org_id, _), moved in zip(additions, moves, strict=True):
        volunteer_moves[org_id] += moved
    org_ops = []
    for org_id in set(tally.orgs) | set(volunteer_moves):
        moved = volunteer_moves[org_id]
        increments: dict = {"totals.volunteers": moved} if moved else {}
        for month, figures in tally.orgs.get(org_id, {}).items():
            for figure, value in figures.items():
                increments[f"totals.{figure}"] = increments.get(f"totals.{figure}", 0) + value
                increments[f"months.{month}.{figure}"] = value
        if not increments:
            continue
        node = tally.nodes.get(org_id)
        org_ops.append(
            UpdateOne(
                {"_id": _key(org_id, year)},
                {
                    "$inc": increments,
                    "$setOnInsert": {
                        "org_id": org_id,
                        "year": year,
                        "kind": node.kind if node else None,
                        "orgs": list(tally.lineage(org_id)),
                    },
                },
                upsert=True,
            )
        )
    await _bulk(ctx.db[ORGS], org_ops)
    for name, docs in zip((SITES, PROJECTS), await _owned_docs(ctx, tally, year), strict=True):
        await _bulk(ctx.db[name], [_increment(doc) for doc in docs.values()])


async def _owned_docs(ctx, tally: Tally, year: int | None) -> tuple[dict, dict]:
    """The roll-ups of sites and projects in a tally, each counted under every organisation
    above the one that owns it."""
    site_briefs = await sites.briefs(ctx, list(tally.sites)) if tally.sites else {}
    project_briefs = (
        await activities.project_briefs(ctx, list(tally.projects)) if tally.projects else {}
    )
    tally.nodes |= await _nodes_for(
        ctx, {b["org_id"] for b in [*site_briefs.values(), *project_briefs.values()]}
    )

    def owned(field: str, thing: ObjectId, briefs: dict, figures: dict) -> dict:
        owner = briefs.get(thing, {}).get("org_id")
        key = _key(thing, year)
        return {
            "_id": key,
            field: thing,
            "year": year,
            "orgs": list(tally.lineage(owner)),
            **figures,
        }

    return (
        {
            _key(site, year): owned("site_id", site, site_briefs, {"beneficiaries": people})
            for site, people in tally.sites.items()
        },
        {
            _key(project, year): owned(
                "project_id", project, project_briefs, {f: figures[f] for f in OWNED_FIGURES}
            )
            for project, figures in tally.projects.items()
        },
    )


def _increment(doc: dict) -> UpdateOne:
    """The update that adds a site's or project's roll-up document to the stored one."""
    added = {k: v for k, v in doc.items() if k in OWNED_FIGURES}
    rest = {k: v for k, v in doc.items() if k not in added and k != "_id"}
    return UpdateOne({"_id": doc["_id"]}, {"$inc": added, "$setOnInsert": rest}, upsert=True)


async def _add_volunteer_hours(ctx, user_id, org_id, value: float, year: int) -> int:
    """Add hours to a volunteer's year within one organisation; +1 when this made them one of
    its volunteers, -1 when it made them stop being one, else 0. The document as it was before
    the increment decides, so concurrent additions each see a different, true history."""
    key = _key(user_id, org_id, year)
    update = {
        "$inc": {"hours": value},
        "$setOnInsert": {"user_id": user_id, "org_id": org_id, "year": year},
    }
    collection = ctx.db[VOLUNTEERS]
    try:
        before = await collection.find_one_and_update(
            {"_id": key}, update, projection={"hours": 1}, upsert=True
        )
    except DuplicateKeyError:  # raced the first upsert of this volunteer's year
        before = await collection.find_one_and_update({"_id": key}, update, projection={"hours": 1})
    was = (before or {}).get("hours", 0.0) > EPSILON
    now = (before or {}).get("hours", 0.0) + value > EPSILON
    return int(now) - int(was)


# -- keeping the roll-ups current -------------------------------------------------------------


async def _apply_one(ctx, org_ids, year: int, count) -> None:
    tally = Tally(await _nodes_for(ctx, org_ids))
    count(tally)
    await _apply(ctx, tally, year)


async def on_activity_published(ctx, kind: str, *, activity_id: ObjectId, **_) -> None:
    held = await activities.held_activity(ctx, activity_id)
    if held is not None and not held.caravan_visit:
        year = held.starts_at.astimezone(SHANGHAI).year
        await _apply_one(ctx, [held.org_id], year, lambda t: t.count_activity(held))


async def on_activity_cancelled(ctx, kind: str, *, activity_id: ObjectId, **_) -> None:
    held = await activities.held_activity(ctx, activity_id)
    if held is not None and not held.caravan_visit:
        year = held.starts_at.astimezone(SHANGHAI).year
        await _apply_one(ctx, [held.org_id], year, lambda t: t.count_activity(held, sign=-1))


async def on_activity_reached(ctx, kind: str, *, activity_id: ObjectId, delta: int, **_) -> None:
    held = await activities.held_activity(ctx, activity_id)
    if held is not None and not held.caravan_visit:
        year = held.starts_at.astimezone(SHANGHAI).year
        await _apply_one(ctx, [held.org_id], year, lambda t: t.reach(held, delta))


async def _count_values(ctx, values: list[hours.CreditValue]) -> None:
    by_year: dict[int, list] = defaultdict(list)
    for value in values:
        by_year[value.served_at.astimezone(SHANGHAI).year].append(value)
    for year, group in by_year.items():
        tally = Tally(await _nodes_for(ctx, [v.org_id for v in group]))
        for value in group:
            tally.count_hours(value)
        await _apply(ctx, tally, year)


async def on_hours_confirmed(ctx, kind: str, *, record_ids: list[ObjectId], **_) -> None:
    await _count_values(ctx, await hours.credit_values(ctx, record_ids))


async def on_hours_adjusted(ctx, kind: str, *, record_id: ObjectId, delta: float, **_) -> None:
    values = await hours.credit_values(ctx, [record_id])
    await _count_values(ctx, [msgspec.structs.replace(v, hours=delta) for v in values])


async def on_trip_logged(ctx, kind: str, *, org_id: ObjectId, date: str, km: float, **_) -> None:
    await _apply_one(ctx, [org_id], int(date[:4]), lambda t: t.add(org_id, date[:7], km=km))


async def on_visit_confirmed(
    ctx, kind: str, *, org_id: ObjectId, site_id: ObjectId, date: str, beneficiaries: int, **_
) -> None:
    await _apply_one(
        ctx, [org_id], int(date[:4]), lambda t: t.count_visit(org_id, site_id, date, beneficiaries)
    )


def register() -> None:
    """Hook the roll-ups to the domain events (called once at start)."""
    events.subscribe(events.ACTIVITY_PUBLISHED, on_activity_published)
    events.subscribe(events.ACTIVITY_CANCELLED, on_activity_cancelled)
    events.subscribe(events.ACTIVITY_REACHED, on_activity_reached)
    events.subscribe(hours.HOURS_CONFIRMED, on_hours_confirmed)
    events.subscribe(hours.HOURS_ADJUSTED, on_hours_adjusted)
    events.subscribe(events.TRIP_LOGGED, on_trip_logged)
    events.subscribe(events.VISIT_CONFIRMED, on_visit_confirmed)


# -- the nightly check ------------------------------------------------------------------------


def _rounded(figures: dict) -> dict:
    return {k: round(v, 2) for k, v in figures.items() if round(v, 2) != 0}


def _comparable(name: str, doc: dict | None) -> dict | None:
    """What must agree between a stored roll-up and the recount; None for an empty one.
    Float sums are compared to the hundredth, and zeros left behind by increments ignored."""
    if doc is None:
        return None
    if name == ORGS:
        months = {
            m: f for m, f in ((m, _rounded(f)) for m, f in doc.get("months", {}).items()) if f
        }
        shape = {"totals": _rounded(doc.get("totals", {})), "months": months}
        empty = not shape["totals"]
    elif name == VOLUNTEERS:
        shape = {"hours": round(doc["hours"], 2)}
        empty = not shape["hours"]
    else:
        shape = _rounded({k: doc[k] for k in OWNED_FIGURES if k in doc})
        empty = not shape
    return None if empty else {**shape, "orgs": doc.get("orgs")}


async def reconcile(ctx, year: int, *, repair: bool = True, quiet: bool = False) -> dict[str, int]:
    """Recount the year from the sources and compare each roll-up document with it; documents
    that differ are logged (unless `quiet`: a bulk load expects them) and, with `repair`,
    replaced. Returns the mismatches by collection."""
    expected = await _documents(ctx, await _recount(ctx, Period.calendar_year(year)), year)
    mismatches = {}
    for name, docs in expected.items():
        stored = {d["_id"]: d async for d in ctx.db[name].find({"year": year})}
        wrong = [
            key
            for key in docs.keys() | stored.keys()
            if _comparable(name, docs.get(key)) != _comparable(name, stored.get(key))
        ]
        mismatches[name] = len(wrong)
        if wrong and not quiet:
            log.warning(
                "stats_rollup_mismatch",
                collection=name,
                year=year,
                documents=len(wrong),
                sample=sorted(wrong)[:5],
                repaired=repair,
            )
        if repair and not stored:  # a first count (after a bulk load): plain inserts are faster
            await _bulk(ctx.db[name], [InsertOne(docs[key]) for key in wrong])
        elif repair:
            await _bulk(
                ctx.db[name],
                [
                    ReplaceOne({"_id": key}, docs[key], upsert=True)
                    if key in docs
                    else DeleteOne({"_id": key})
                    for key in wrong
                ],
            )
    return mismatches


# -- reports ----------------------------------------------------------------------------------


class VolunteerFigures(msgspec.Struct):
    teams: int
    bases: int
    projects: int
    activities: int
    volunteers: int
    hours: float
    beneficiaries: int


class CaravanFigures(msgspec.Struct):
    activities: int
    km: float
    beneficiaries: int


class TopVolunteer(msgspec.Struct):
    user_id: str
    name: str | None  # masked: staff see who, not the full name
    hours: float


class TopTeam(msgspec.Struct):
    org_id: str
    name: str
    hours: float
    activities: int


class TopSite(msgspec.Struct):
    site_id: str
    name: str
    beneficiaries: int


class TopProject(msgspec.Struct):
    project_id: str
    name: str
    activities: int
    beneficiaries: int


class Breakdown(msgspec.Struct):
    """One month's or one county's figures."""

    key: str  # "2026-03", or a county's org id
    name: str
    activities: int
    beneficiaries: int
    hours: float
    caravan_activities: int
    km: float
    caravan_beneficiaries: int
    volunteers: int | None = None  # per county only: a volunteer is counted once a year


class Report(msgspec.Struct):
    org_id: str
    org_name: str
    first: date
    last: date
    year: int | None
    source: str  # "rollup" (a calendar year) or "recount"
    volunteer: VolunteerFigures
    caravan: CaravanFigures
    top_volunteers: list[TopVolunteer]
    top_teams_by_hours: list[TopTeam]
    top_teams_by_activities: list[TopTeam]
    top_sites: list[TopSite]
    top_projects: list[TopProject]
    months: list[Breakdown]
    counties: list[Breakdown]


class _Stored:
    """Roll-up documents of one calendar year, as stored."""

    def __init__(self, ctx, year: int) -> None:
        self.ctx, self.year = ctx, year

    async def get(self, name: str, key: str) -> dict | None:
        return await self.ctx.db[name].find_one({"_id": key})

    async def within(self, name: str, org_id: ObjectId, **match) -> list[dict]:
        query = {"orgs": org_id, "year": self.year, **match}
        return await self.ctx.db[name].find(query, {"months": 0}).to_list(None)

    async def volunteers(self, org_id: ObjectId, typical: float) -> list[dict]:
        """At least the top ten's documents: those above a floor, lowered until ten are found.
        Each try is one short index range, where a sort would read every volunteer."""
        floor = typical * 8
        while True:
            query = {"org_id": org_id, "year": self.year, "hours": {"$gte": floor}}
            docs = await self.ctx.db[VOLUNTEERS].find(query).to_list(None)
            if len(docs) >= TOP or floor <= EPSILON:
                return docs
            floor = floor / 4 if floor > 0.01 else EPSILON


class _Recounted:
    """Roll-up documents of any period, built in memory from the sources."""

    def __init__(self, docs: dict[str, dict[str, dict]]) -> None:
        self.docs = docs

    async def get(self, name: str, key: str) -> dict | None:
        return self.docs[name].get(key)

    async def within(self, name: str, org_id: ObjectId, **match) -> list[dict]:
        return [
            d
            for d in self.docs[name].values()
            if org_id in d["orgs"] and all(d.get(k) == v for k, v in match.items())
        ]

    async def volunteers(self, org_id: ObjectId, typical: float) -> list[dict]:
        return [d for d in self.docs[VOLUNTEERS].values() if d["org_id"] == org_id]


def _mask(name: str | None) -> str | None:
    return name[0] + "*" * (len(name) - 1) if name else None


def _figure(figures: dict, name: str, digits: int = 2):
    value = figures.get(name, 0)
    return round(value, digits) if name in ("hours", "km") else int(value)


def _breakdown(key: str, name: str, figures: dict, volunteers: int | None = None) -> Breakdown:
    return Breakdown(
        key=key,
        name=name,
        **{f: _figure(figures, f, 1 if f == "km" else 2) for f in FIGURES},
        volunteers=volunteers,
    )


def parse_period(year: int | None, first: str | None, last: str | None, today: date) -> Period:
    if first or last:
        try:
            start = date.fromisoformat(first) if first else date(today.year, 1, 1)
            end = date.fromisoformat(last) if last else today
        except ValueError:
            raise InvalidRequest("日期格式应为 YYYY-MM-DD", field="from") from None
        return Period.between(start, end)
    return Period.calendar_year(year or today.year)


async def report(ctx, org_id, period: Period) -> Report:
    """The figures of an organisation's subtree over a period."""
    org_id = parse_id(org_id, "org_id")
    nodes = await orgs.nodes(ctx)
    if org_id not in nodes:
        raise NotFound("组织不存在", field="org_id")
    subtree = [n for n in nodes.values() if org_id in n.lineage]
    if period.year is not None:
        source, label = _Stored(ctx, period.year), period.year
    else:
        tally = await _recount(ctx, period, org_id)
        source, label = _Recounted(await _documents(ctx, tally, None)), None
    own = await source.get(ORGS, _key(org_id, label)) or {"totals": {}, "months": {}}
    totals = own["totals"]

    def existing(kind: str) -> int:
        return sum(
            1 for n in subtree if n.kind == kind and (n.created_at or period.start) < period.end
        )

    teams = await source.within(ORGS, org_id, kind="team")
    by_hours = sorted(teams, key=lambda d: (-d["totals"].get("hours", 0), str(d["org_id"])))
    by_count = sorted(teams, key=lambda d: (-d["totals"].get("activities", 0), str(d["org_id"])))

    def team_row(doc: dict) -> TopTeam:
        return TopTeam(
            org_id=str(doc["org_id"]),
            name=nodes[doc["org_id"]].name,
            hours=_figure(doc["totals"], "hours"),
            activities=_figure(doc["totals"], "activities"),
        )

    county_docs = {d["org_id"]: d for d in await source.within(ORGS, org_id, kind="county")}
    counties = [
        _breakdown(
            str(n.id),
            n.name,
            county_docs.get(n.id, {}).get("totals", {}),
            int(county_docs.get(n.id, {}).get("totals", {}).get("volunteers", 0)),
        )
        for n in sorted(subtree, key=lambda n: str(n.id))
        if n.kind == "county"
    ]
    site_docs = sorted(
        (d for d in await source.within(SITES, org_id) if d["beneficiaries"] > 0),
        key=lambda d: (-d["beneficiaries"], str(d["site_id"])),
    )[:TOP]
    site_names = await sites.briefs(ctx, [d["site_id"] for d in site_docs])
    project_docs = sorted(
        (d for d in await source.within(PROJECTS, org_id) if d["activities"] > 0),
        key=lambda d: (-d["activities"], -d["beneficiaries"], str(d["project_id"])),
    )[:TOP]
    project_names = await activities.project_briefs(ctx, [d["project_id"] for d in project_docs])
    top = await _top_volunteers(ctx, source, org_id, totals)
    return Report(
        org_id=str(org_id),
        org_name=nodes[org_id].name,
        first=period.first,
        last=period.last,
        year=period.year,
        source="rollup" if period.year is not None else "recount",
        volunteer=VolunteerFigures(
            teams=existing("team"),
            bases=existing("base"),
            projects=await activities.count_projects(ctx, {n.id for n in subtree}, period.end),
            activities=_figure(totals, "activities"),
            volunteers=_figure(totals, "volunteers"),
            hours=_figure(totals, "hours"),
            beneficiaries=_figure(totals, "beneficiaries"),
        ),
        caravan=CaravanFigures(
            activities=_figure(totals, "caravan_activities"),
            km=_figure(totals, "km", 1),
            beneficiaries=_figure(totals, "caravan_beneficiaries"),
        ),
        top_volunteers=top,
        top_teams_by_hours=[team_row(d) for d in by_hours[:TOP] if d["totals"].get("hours", 0) > 0],
        top_teams_by_activities=[
            team_row(d) for d in by_count[:TOP] if d["totals"].get("activities", 0) > 0
        ],
        top_sites=[
            TopSite(
                site_id=str(d["site_id"]),
                name=site_names.get(d["site_id"], {}).get("name", ""),
                beneficiaries=int(d["beneficiaries"]),
            )
            for d in site_docs
        ],
        top_projects=[
            TopProject(
                project_id=str(d["project_id"]),
                name=project_names.get(d["project_id"], {}).get("name", ""),
                activities=int(d["activities"]),
                beneficiaries=int(d["beneficiaries"]),
            )
            for d in project_docs
        ],
        months=[_breakdown(m, m, own.get("months", {}).get(m, {})) for m in period.months()],
        counties=counties,
    )


async def _top_volunteers(ctx, source, org_id: ObjectId, totals: dict) -> list[TopVolunteer]:
    typical = totals.get("hours", 0) / max(1, totals.get("volunteers", 0))
    docs = await source.volunteers(org_id, typical)
    ranked = sorted(
        ((round(d["hours"], 2), d["user_id"]) for d in docs if d["hours"] > EPSILON),
        key=lambda pair: (-pair[0], str(pair[1])),
    )[:TOP]
    names = await identity.briefs(ctx, [user_id for _, user_id in ranked])
    return [
        TopVolunteer(
            user_id=str(user_id),
            name=_mask(names.get(user_id, {}).get("real_name")),
            hours=hours_,
        )
        for hours_, user_id in ranked
    ]


# -- exports ----------------------------------------------------------------------------------

_FIGURE_HEADERS = (
    "活动次数",
    "受益人次",
    "志愿服务时长",
    "大篷车活动次数",
    "行驶里程(km)",
    "大篷车受益人次",
)
TABLES = (
    "summary",
    "months",
    "counties",
    "top_volunteers",
    "top_teams",
    "top_sites",
    "top_projects",
)


def _tables(r: Report) -> dict[str, Sheet]:
    """Every table of a report, with Chinese headers and a totals row where one adds up."""

    def figures(b: Breakdown) -> list:
        return [getattr(b, f) for f in FIGURES]

    def sums(rows: list[Breakdown]) -> list:
        return [round(sum(getattr(b, f) for b in rows), 2) for f in FIGURES]

    v, c = r.volunteer, r.caravan
    summary = [
        ("志愿服务队伍", v.teams),
        ("科普基地", v.bases),
        ("科普项目", v.projects),
        ("科普活动", v.activities),
        ("参与志愿者", v.volunteers),
        ("志愿服务时长", v.hours),
        ("受益人次", v.beneficiaries),
        ("大篷车活动次数", c.activities),
        ("大篷车行驶里程(km)", c.km),
        ("大篷车受益人次", c.beneficiaries),
    ]
    return {
        "summary": Sheet("总览", ("指标", "数值"), [list(row) for row in summary]),
        "months": Sheet(
            "按月",
            ("月份", *_FIGURE_HEADERS),
            [[b.key, *figures(b)] for b in r.months],
            totals=["合计", *sums(r.months)],
        ),
        "counties": Sheet(
            "按县",
            ("县(区)", "参与志愿者", *_FIGURE_HEADERS),
            [[b.name, b.volunteers, *figures(b)] for b in r.counties],
            totals=["合计", sum(b.volunteers or 0 for b in r.counties), *sums(r.counties)],
        ),
        "top_volunteers": Sheet(
            "十佳志愿者",
            ("名次", "志愿者", "用户ID", "服务时长"),
            [[i, t.name, t.user_id, t.hours] for i, t in enumerate(r.top_volunteers, 1)],
        ),
        "top_teams": Sheet(
            "十佳队伍",
            ("名次", "队伍(按时长)", "服务时长", "名次", "队伍(按活动)", "活动次数"),
            [
                [
                    i,
                    a.name if a else "",
                    a.hours if a else "",
                    i,
                    b.name if b else "",
                    b.activities if b else "",
                ]
                for i, (a, b) in enumerate(
                    zip_longest(r.top_teams_by_hours, r.top_teams_by_activities), 1
                )
            ],
        ),
        "top_sites": Sheet(
            "十佳站点",
            ("名次", "站点", "受益人次"),
            [[i, t.name, t.beneficiaries] for i, t in enumerate(r.top_sites, 1)],
        ),
        "top_projects": Sheet(
            "十佳项目",
            ("名次", "项目", "活动次数", "受益人次"),
            [[i, t.name, t.activities, t.beneficiaries] for i, t in enumerate(r.top_projects, 1)],
        ),
    }


def report_workbook(r: Report) -> bytes:
    """The report as an .xlsx workbook, one sheet per table (CPU work: run in an executor)."""
    return workbook(list(_tables(r).values()))


def report_csv(r: Report, table: str) -> bytes:
    """One table of the report as CSV (UTF-8 with BOM, which Excel needs to read Chinese)."""
    sheet = _tables(r)[table]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(sheet.headers)
    writer.writerows(sheet.rows)
    if sheet.totals is not None:
        writer.writerow(sheet.totals)
    return ("\ufeff" + out.getvalue()).encode()
