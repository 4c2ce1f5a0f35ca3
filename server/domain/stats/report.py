"""The report: an organisation subtree's figures over a period, read from the stored roll-ups
for a calendar year and from roll-ups recounted in memory for any other period."""

from __future__ import annotations

from collections import Counter
from datetime import date

import msgspec
from bson import ObjectId

from server.domain import identity, orgs, projects, sites
from server.domain.errors import NotFound
from server.domain.ids import parse_id
from server.domain.stats.periods import Period
from server.domain.stats.rollups import (
    EPSILON,
    FIGURES,
    ORGS,
    PROJECTS,
    SITES,
    VOLUNTEERS,
    documents,
    recount,
    rollup_id,
)

TOP = 10


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
    """One month's or one county's figures, or what is booked above the counties. The rows of
    a table add up to the overview; volunteers do not, as one serving in two counties counts
    in each, and once in the overview."""

    key: str  # "2026-03", a county's org id, or ABOVE
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
    # Facts booked at organisations above the counties (the city's and province's own work), or
    # at the organisation itself below county level: with it the counties add up to the overview.
    above_counties: Breakdown


class LeaderHints:
    """Where each top ten of the stored roll-ups ended last time (its tenth's figure), by
    collection, organisation, year, figure and filter, held in the process
    (`ctx.report_hints`). A year's figures mostly grow, so the next report of the same top ten
    reads everything from there up in one query instead of coming down in bands from a guess.
    A hint only says where the reads start: when fewer than ten are at or above it (a reversal
    lowered some), the bands below it are read as without one."""

    def __init__(self) -> None:
        self._tenth: dict[tuple, float] = {}

    def get(self, key: tuple) -> float | None:
        return self._tenth.get(key)

    def keep(self, key: tuple, values: list[float]) -> None:
        if len(values) >= TOP:
            self._tenth[key] = sorted(values, reverse=True)[TOP - 1]


def _value(doc: dict, field: str) -> float:
    for part in field.split("."):
        doc = doc.get(part, {})
    return doc or 0


class _Stored:
    """Roll-up documents of one calendar year, as stored."""

    def __init__(self, ctx, year: int) -> None:
        self.ctx, self.year = ctx, year

    async def get(self, name: str, key: str) -> dict | None:
        """An organisation's own roll-up without its caravans (the KPIs' part)."""
        return await self.ctx.db[name].find_one(
            {"_id": key}, {"totals": 1, "months": 1, "counties": 1}
        )

    async def within(self, name: str, org_id: ObjectId, **match) -> list[dict]:
        """The subtree's documents, their `org_id` and `totals` only: the embedded server builds
        an inclusion projection faster than it drops `months` and `caravans` (47 ms against 70
        for a province's 158 counties, measured)."""
        query = {"orgs": org_id, "year": self.year, **match}
        return await self.ctx.db[name].find(query, {"org_id": 1, "totals": 1}).to_list(None)

    async def leaders(
        self, name: str, org_id: ObjectId, field: str, start: float, least: float, **match
    ) -> list[dict]:
        """At least the TOP documents of the subtree with the largest `field` above `least`
        (all of them when fewer): bands of `field` from the last report's tenth (a hint) or
        else from `start` down, each one short range of an index ending in `field`, read until
        TOP are found. A sort, or one range down to `least`, would read every document of the
        subtree, which grows with the year."""
        key = "org_id" if name == VOLUNTEERS else "orgs"
        query = {key: org_id, "year": self.year, **match}
        collection = self.ctx.db[name]

        async def read(band: dict) -> list[dict]:
            return await collection.find({**query, field: band}, _SHOWN[name]).to_list(None)

        hints, hint_key = self.ctx.report_hints, (name, org_id, self.year, field, *match.items())
        hint = hints.get(hint_key) if start > least else None
        docs: list[dict] = []
        upper, floor = None, start
        if hint is not None and hint > least:
            docs = await read({"$gte": hint})
            upper, floor = hint, min(start, hint * (_STEP_FOUND if docs else _STEP_EMPTY))
        while len(docs) < TOP:
            last = floor <= least or floor < start * _LOWEST
            band = {"$gt": least} if last else {"$gte": floor}
            if upper is not None:
                band["$lt"] = upper
            docs += await read(band)
            if last:
                break
            upper, floor = floor, floor * (_STEP_FOUND if docs else _STEP_EMPTY)
        hints.keep(hint_key, [v for v in (_value(d, field) for d in docs) if v > least])
        return docs


# What a top ten shows of each roll-up (an inclusion projection: see `_Stored.within`).
_SHOWN = {
    ORGS: {"org_id": 1, "totals": 1},
    VOLUNTEERS: {"user_id": 1, "hours": 1},
    SITES: {"site_id": 1, "beneficiaries": 1},
    PROJECTS: {"project_id": 1, "activities": 1, "beneficiaries": 1},
}

# How a floor comes down: in long steps while no band held anything, then in short ones, which
# read few documents past the tenth; below start / 1024 the last band takes the rest.
_STEP_EMPTY, _STEP_FOUND, _LOWEST = 0.6, 0.8, 1 / 1024


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

    async def leaders(
        self, name: str, org_id: ObjectId, field: str, start: float, least: float, **match
    ) -> list[dict]:
        if name == VOLUNTEERS:
            return [d for d in self.docs[name].values() if d["org_id"] == org_id]
        return await self.within(name, org_id, **match)


def _start(total: float, population: int | None) -> float:
    """Where the bands of a top ten start: three times the mean when the population is known
    and large, else the most the tenth can hold (a tenth of the total)."""
    if population is not None and population <= 2 * TOP:
        return 0.0  # few enough to read at once
    if population:
        return 3 * total / population
    return total / TOP


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


_DIGITS = {"hours": 2, "km": 1}
ABOVE = "above"
_ABOVE_NAMES = {"province": "市直/省直", "city": "市直"}


def _months(figures: dict[str, dict], months: list[str], totals: dict) -> list[Breakdown]:
    """The months, their hours and km rounded so that they add up to the rounded overview:
    each month is the rounded running total less the one before it (the last ends at the
    overview), so no month is off by more than a rounding step."""
    rows, running, before = [], Counter(), dict.fromkeys(_DIGITS, 0.0)
    for n, month in enumerate(months):
        own = figures.get(month, {})
        running.update({f: own.get(f, 0) for f in _DIGITS})
        reached = totals if n == len(months) - 1 else running
        row = _breakdown(month, month, own)
        for f, digits in _DIGITS.items():
            now = round(reached.get(f, 0), digits)
            setattr(row, f, round(now - before[f], digits))
            before[f] = now
        rows.append(row)
    return rows


def _above(kind: str, totals: dict, counties: list[Breakdown]) -> Breakdown:
    """The overview less the counties' rows, as they are shown."""

    def rest(f: str):
        value = _figure(totals, f, _DIGITS.get(f, 2)) - sum(getattr(c, f) for c in counties)
        return round(value, _DIGITS[f]) if f in _DIGITS else int(value)

    return Breakdown(
        key=ABOVE, name=_ABOVE_NAMES.get(kind, "本级"), **{f: rest(f) for f in FIGURES}
    )


async def report(ctx, org_id, period: Period) -> Report:
    """The figures of an organisation's subtree over a period."""
    org_id = parse_id(org_id, "org_id")
    nodes = await orgs.nodes(ctx)
    if org_id not in nodes:
        raise NotFound("组织不存在", field="org_id")
    subtree = await orgs.subtree_nodes(ctx, org_id)
    if period.year is not None:
        source, label = _Stored(ctx, period.year), period.year
    else:
        tally = await recount(ctx, period, org_id)
        source, label = _Recounted(await documents(ctx, tally, None)), None
    own = await source.get(ORGS, rollup_id(org_id, label)) or {"totals": {}, "months": {}}
    totals = own["totals"]

    start, end = period.start, period.end

    def existing(kind: str) -> int:
        return sum(1 for n in subtree if n.kind == kind and (n.created_at or start) < end)

    team_count = existing("team")
    by_hours = sorted(
        await source.leaders(
            ORGS,
            org_id,
            "totals.hours",
            _start(totals.get("hours", 0), team_count),
            0,
            kind="team",
        ),
        key=lambda d: (-d["totals"].get("hours", 0), str(d["org_id"])),
    )
    by_count = sorted(
        await source.leaders(
            ORGS,
            org_id,
            "totals.activities",
            _start(totals.get("activities", 0), team_count),
            0,
            kind="team",
        ),
        key=lambda d: (-d["totals"].get("activities", 0), str(d["org_id"])),
    )

    def team_row(doc: dict) -> TopTeam:
        return TopTeam(
            org_id=str(doc["org_id"]),
            name=nodes[doc["org_id"]].name,
            hours=_figure(doc["totals"], "hours"),
            activities=_figure(doc["totals"], "activities"),
        )

    if "counties" in own:
        by_county = own["counties"]
    else:  # written before roll-ups held their counties, or no county has a fact yet
        by_county = {
            str(d["org_id"]): d["totals"] for d in await source.within(ORGS, org_id, kind="county")
        }
    by_county[str(org_id)] = totals
    counties = [
        _breakdown(
            str(n.id),
            n.name,
            by_county.get(str(n.id), {}),
            int(by_county.get(str(n.id), {}).get("volunteers", 0)),
        )
        for n in subtree  # by id
        if n.kind == "county"
    ]
    reached = totals.get("beneficiaries", 0) + totals.get("caravan_beneficiaries", 0)
    site_docs = sorted(
        (
            d
            for d in await source.leaders(SITES, org_id, "beneficiaries", _start(reached, None), 0)
            if d["beneficiaries"] > 0
        ),
        key=lambda d: (-d["beneficiaries"], str(d["site_id"])),
    )[:TOP]
    site_names = await sites.briefs(ctx, [d["site_id"] for d in site_docs])
    project_count = await projects.count_projects(ctx, {n.id for n in subtree}, end)
    project_docs = sorted(
        (
            d
            for d in await source.leaders(
                PROJECTS,
                org_id,
                "activities",
                _start(totals.get("activities", 0), project_count),
                0,
            )
            if d["activities"] > 0
        ),
        key=lambda d: (-d["activities"], -d["beneficiaries"], str(d["project_id"])),
    )[:TOP]
    project_names = await projects.project_briefs(ctx, [d["project_id"] for d in project_docs])
    top = await _top_volunteers(ctx, source, org_id, totals)
    return Report(
        org_id=str(org_id),
        org_name=nodes[org_id].name,
        first=period.first,
        last=period.last,
        year=period.year,
        source="rollup" if period.year is not None else "recount",
        volunteer=VolunteerFigures(
            teams=team_count,
            bases=existing("base"),
            projects=project_count,
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
        months=_months(own.get("months", {}), period.months(), totals),
        counties=counties,
        above_counties=_above(nodes[org_id].kind, totals, counties),
    )


async def _top_volunteers(ctx, source, org_id: ObjectId, totals: dict) -> list[TopVolunteer]:
    typical = totals.get("hours", 0) / max(1, totals.get("volunteers", 0))
    docs = await source.leaders(VOLUNTEERS, org_id, "hours", typical * 8, EPSILON)
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
