"""The roll-up documents: what counts where (`Tally`), the recount from the sources, and the
documents a tally stands for, written whole (the nightly repair) or added to the stored ones
(the event subscribers)."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from datetime import timedelta

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from server.domain import activities, caravans, hours, orgs, projects, sites
from server.domain.stats.periods import Period, month_of

FIGURES = (
    "activities",
    "beneficiaries",
    "hours",
    "caravan_activities",
    "km",
    "caravan_beneficiaries",
)
OWNED_FIGURES = ("activities", "beneficiaries")  # of a site's or project's year
CARAVAN_FIGURES = ("caravan_activities", "km", "caravan_beneficiaries")  # of a caravan's year
EPSILON = 1e-6
ORGS, VOLUNTEERS, SITES, PROJECTS = (
    "stats_orgs",
    "stats_volunteers",
    "stats_sites",
    "stats_projects",
)


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
        # organisation → caravan → its figures, for the caravans whose trips count there
        self.caravans: dict[ObjectId, dict[ObjectId, Counter]] = defaultdict(
            lambda: defaultdict(Counter)
        )
        # organisation above a county → that county → its figures: the report's county table
        # is then one document, not one per county of the province
        self.counties: dict[ObjectId, dict[ObjectId, Counter]] = defaultdict(
            lambda: defaultdict(Counter)
        )

    def lineage(self, org_id: ObjectId) -> tuple[ObjectId, ...]:
        node = self.nodes.get(org_id)
        return node.lineage if node else (org_id,)

    def add(self, org_id: ObjectId, month: str, **figures: float) -> None:
        for org in self.lineage(org_id):
            self.orgs[org][month].update(figures)
        county, above = self.county_of(org_id)
        for org in above:
            self.counties[org][county].update(figures)

    def county_of(self, org_id: ObjectId) -> tuple[ObjectId | None, tuple[ObjectId, ...]]:
        """The county at or above an organisation, and the organisations above that county."""
        lineage = self.lineage(org_id)
        for n, org in enumerate(lineage):
            node = self.nodes.get(org)
            if node is not None and node.kind == "county":
                return org, lineage[n + 1 :]
        return None, ()

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

    def add_caravan(self, org_id: ObjectId, caravan_id: ObjectId, day: str, **figures) -> None:
        self.add(org_id, day[:7], **figures)
        for org in self.lineage(org_id):
            self.caravans[org][caravan_id].update(figures)

    def count_trip(self, trip: caravans.TripFacts) -> None:
        self.count_km(trip.org_id, trip.caravan_id, trip.date, trip.km)
        for visit in trip.visits:
            if visit["confirmed"]:
                self.count_visit(
                    trip.org_id,
                    trip.caravan_id,
                    visit["site_id"],
                    trip.date,
                    visit["beneficiaries"],
                )

    def count_km(self, org_id: ObjectId, caravan_id: ObjectId, day: str, km: float) -> None:
        self.add_caravan(org_id, caravan_id, day, km=km)

    def count_visit(
        self, org_id: ObjectId, caravan_id: ObjectId, site_id: ObjectId, day: str, people: int
    ) -> None:
        self.add_caravan(
            org_id, caravan_id, day, caravan_activities=1, caravan_beneficiaries=people
        )
        self.sites[site_id] += people


async def nodes_for(ctx, org_ids) -> dict[ObjectId, orgs.OrgNode]:
    """These organisations and all above them."""
    leaves = await orgs.nodes(ctx, list(set(org_ids)))
    above = {org for node in leaves.values() for org in node.lineage} - set(leaves)
    return leaves | (await orgs.nodes(ctx, list(above)) if above else {})


async def recount(ctx, period: Period, within: ObjectId | None = None) -> Tally:
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


def rollup_id(*parts) -> str:
    return ":".join(str(p) for p in parts)


async def documents(ctx, tally: Tally, year: int | None) -> dict[str, dict[str, dict]]:
    """The roll-up documents a tally stands for, by collection and _id."""
    serving: Counter = Counter()
    volunteers = {}
    for user_id, by_org in tally.volunteers.items():
        for org_id, value in by_org.items():
            if value > EPSILON:
                serving[org_id] += 1
            key = rollup_id(user_id, org_id, year)
            volunteers[key] = {
                "_id": key,
                "user_id": user_id,
                "org_id": org_id,
                "year": year,
                "hours": value,
            }
    for org_id, count in serving.items():
        county, above = tally.county_of(org_id)
        if county == org_id:
            for org in above:
                tally.counties[org][county]["volunteers"] += count
    org_docs = {}
    for org_id in set(tally.orgs) | set(serving):
        months = tally.orgs.get(org_id, {})
        totals = Counter()
        for figures in months.values():
            totals.update(figures)
        node = tally.nodes.get(org_id)
        org_docs[rollup_id(org_id, year)] = {
            "_id": rollup_id(org_id, year),
            "org_id": org_id,
            "year": year,
            "kind": node.kind if node else None,
            "orgs": list(tally.lineage(org_id)),
            "totals": {**totals, "volunteers": serving[org_id]},
            "months": {month: dict(figures) for month, figures in months.items()},
            "caravans": {
                str(caravan): dict(figures)
                for caravan, figures in tally.caravans.get(org_id, {}).items()
            },
            "counties": {
                str(county): dict(figures)
                for county, figures in tally.counties.get(org_id, {}).items()
            },
        }
    site_docs, project_docs = await _owned_docs(ctx, tally, year)
    return {ORGS: org_docs, VOLUNTEERS: volunteers, SITES: site_docs, PROJECTS: project_docs}


async def bulk(collection, operations: list) -> None:
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


async def apply(ctx, tally: Tally, year: int) -> None:
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
    for org_id, moved in volunteer_moves.items():
        county, above = tally.county_of(org_id)
        if moved and county == org_id:
            for org in above:
                tally.counties[org][county]["volunteers"] += moved
    org_ops = []
    for org_id in set(tally.orgs) | set(volunteer_moves) | set(tally.counties):
        moved = volunteer_moves[org_id]
        increments: dict = {"totals.volunteers": moved} if moved else {}
        for month, figures in tally.orgs.get(org_id, {}).items():
            for figure, value in figures.items():
                increments[f"totals.{figure}"] = increments.get(f"totals.{figure}", 0) + value
                increments[f"months.{month}.{figure}"] = value
        for caravan, figures in tally.caravans.get(org_id, {}).items():
            for figure, value in figures.items():
                increments[f"caravans.{caravan}.{figure}"] = value
        for county, figures in tally.counties.get(org_id, {}).items():
            for figure, value in figures.items():
                if value:
                    increments[f"counties.{county}.{figure}"] = value
        if not increments:
            continue
        node = tally.nodes.get(org_id)
        org_ops.append(
            UpdateOne(
                {"_id": rollup_id(org_id, year)},
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
    await bulk(ctx.db[ORGS], org_ops)
    for name, docs in zip((SITES, PROJECTS), await _owned_docs(ctx, tally, year), strict=True):
        await bulk(ctx.db[name], [_increment(doc) for doc in docs.values()])


async def _owned_docs(ctx, tally: Tally, year: int | None) -> tuple[dict, dict]:
    """The roll-ups of sites and projects in a tally, each counted under every organisation
    above the one that owns it."""
    site_briefs = await sites.briefs(ctx, list(tally.sites)) if tally.sites else {}
    project_briefs = (
        await projects.project_briefs(ctx, list(tally.projects)) if tally.projects else {}
    )
    tally.nodes |= await nodes_for(
        ctx, {b["org_id"] for b in [*site_briefs.values(), *project_briefs.values()]}
    )

    def owned(field: str, thing: ObjectId, briefs: dict, figures: dict) -> dict:
        owner = briefs.get(thing, {}).get("org_id")
        key = rollup_id(thing, year)
        return {
            "_id": key,
            field: thing,
            "year": year,
            "orgs": list(tally.lineage(owner)),
            **figures,
        }

    return (
        {
            rollup_id(site, year): owned("site_id", site, site_briefs, {"beneficiaries": people})
            for site, people in tally.sites.items()
        },
        {
            rollup_id(project, year): owned(
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


# Each failed attempt means another addition changed the answer in between: running out takes a
# storm of additions to one volunteer's year, which events do not make.
_ATTEMPTS = 100


async def _add_volunteer_hours(ctx, user_id, org_id, value: float, year: int) -> int:
    """Add hours to a volunteer's year within one organisation; +1 when this made them one of
    its volunteers, -1 when it made them stop being one, else 0.

    The hours just before the addition decide. They are read, and the addition is made on the
    condition that the stored hours still give the same answer (`_same_outcome`), so concurrent
    additions each see a different, true history; one that another changed the answer under
    reads again. A read and a conditional update by `_id`, not a findAndModify, which the
    embedded server answers by scanning the collection."""
    key = rollup_id(user_id, org_id, year)
    collection = ctx.db[VOLUNTEERS]
    for _ in range(_ATTEMPTS):
        doc = await collection.find_one({"_id": key}, {"hours": 1})
        if doc is None:
            first = {"_id": key, "user_id": user_id, "org_id": org_id, "year": year, "hours": value}
            try:
                await collection.insert_one(first)
            except DuplicateKeyError:  # a concurrent addition made the volunteer's year first
                continue
            return int(value > EPSILON)
        before = doc["hours"]
        added = await collection.update_one(
            {"_id": key, "hours": _same_outcome(before, value)}, {"$inc": {"hours": value}}
        )
        if added.matched_count:
            return int(before + value > EPSILON) - int(before > EPSILON)
    raise RuntimeError(f"{VOLUNTEERS} {key}: hours kept changing under {_ATTEMPTS} additions")


def _same_outcome(before: float, value: float) -> dict:
    """A condition on stored hours `h` under which adding `value` counts as adding it to
    `before` does: `h > EPSILON` and `h + value > EPSILON` are as they are for `before`.

    Floating-point addition is monotonic (h ≥ before gives h + value ≥ before + value), so a
    bound at `before` keeps the second; a positive value keeps a volunteer one and a negative
    one keeps anyone else not one, so then the first alone suffices."""
    was, now = before > EPSILON, before + value > EPSILON
    if was and now:
        return {"$gt": EPSILON} if value > 0 else {"$gte": before}
    if not was and not now:
        return {"$lte": EPSILON} if value < 0 else {"$lte": before}
    if now:  # became one: before ≤ h ≤ EPSILON
        return {"$gte": before, "$lte": EPSILON}
    return {"$gt": EPSILON, "$lte": before}  # stopped being one: EPSILON < h ≤ before
