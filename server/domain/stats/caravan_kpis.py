"""The caravan KPIs, read from the organisations' roll-ups: an organisation's year keeps, beside
its totals, the figures of every caravan whose trips count there, so a subtree's KPIs are one
document, kept and checked like every other figure of the report.

A caravan with a target for the year (set by the association: field days, km) is listed even
before its first trip, with its progress toward the target (`caravans.target_progress`)."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date

import msgspec
from bson import ObjectId

from server.clock import SHANGHAI
from server.domain import caravans, orgs
from server.domain.ids import parse_id
from server.domain.stats.rollups import CARAVAN_FIGURES, ORGS, nodes_for, rollup_id


class Pending(msgspec.Struct):
    """Logged visits the sites have not confirmed yet: not in the figures beside them."""

    visits: int = 0
    beneficiaries: int = 0  # as the crew reported them
    oldest_days: int | None = None  # days the longest-waiting visit has waited since logged


class Kpi(msgspec.Struct):
    activities: int
    km: float
    beneficiaries: int
    pending: Pending


class CaravanKpi(Kpi):
    caravan_id: str
    name: str
    plate: str
    target: caravans.TargetProgress | None = None  # with a target for the year


class CountyKpi(Kpi):
    org_id: str
    name: str


class Kpis(msgspec.Struct):
    year: int
    total: Kpi
    caravans: list[CaravanKpi]
    counties: list[CountyKpi]


def _kpi(figures: dict) -> dict:
    return {
        "activities": int(figures.get("caravan_activities", 0)),
        "km": round(figures.get("km", 0), 1),
        "beneficiaries": int(figures.get("caravan_beneficiaries", 0)),
    }


class _Waiting:
    """Pending visits summed as they are added."""

    def __init__(self) -> None:
        self.visits, self.beneficiaries, self.oldest = 0, 0, None

    def add(self, visit: caravans.PendingVisit, today: date) -> None:
        self.visits += 1
        self.beneficiaries += visit.beneficiaries
        days = (today - visit.logged_at.astimezone(SHANGHAI).date()).days
        self.oldest = days if self.oldest is None else max(self.oldest, days)

    def out(self) -> Pending:
        return Pending(self.visits, self.beneficiaries, self.oldest)


async def kpis(ctx, year: int, org_id) -> Kpis:
    """活动次数 (confirmed visits), 行驶里程 (km of every logged trip) and 受益人次 (people
    reached, confirmed visits only) per caravan and per county, in one year (Shanghai dates),
    each with the visits still awaiting the site's confirmation beside it.
    A caravan counts in the nearest county at or above its organisation within the subtree,
    or in its organisation when there is none."""
    org_id = parse_id(org_id, "org_id")
    doc = await ctx.db[ORGS].find_one(
        {"_id": rollup_id(org_id, year)}, {"totals": 1, "caravans": 1}
    )
    doc = doc or {}
    per_caravan = {ObjectId(c): f for c, f in doc.get("caravans", {}).items()}
    waiting = await caravans.pending_visits(ctx, year)
    trip_orgs = await nodes_for(ctx, [v.org_id for v in waiting])
    # Counted where the trip's figures count: under the organisations above the trip's.
    waiting = [v for v in waiting if org_id in trip_orgs[v.org_id].lineage]
    for visit in waiting:
        per_caravan.setdefault(visit.caravan_id, {})
    targeted = await caravans.targeted_caravans(ctx, await orgs.subtree_ids(ctx, org_id), year)
    for caravan in targeted:
        per_caravan.setdefault(caravan["_id"], {})
    fleet = await caravans.caravans_by_id(ctx, list(per_caravan))
    targets = {c["_id"]: await caravans.target_progress(ctx, c, year) for c in targeted}
    nodes = await nodes_for(ctx, [c["org_id"] for c in fleet.values()])

    def county_of(org: ObjectId | None) -> ObjectId | None:
        node = nodes.get(org)
        for above in node.lineage if node else ():
            county = nodes.get(above)
            if county and county.kind == "county" and org_id in county.lineage:
                return above
        return org

    today = ctx.clock.local_now().date()
    total_waiting = _Waiting()
    caravan_waiting: dict[ObjectId, _Waiting] = defaultdict(_Waiting)
    county_waiting: dict[ObjectId | None, _Waiting] = defaultdict(_Waiting)
    for visit in waiting:
        county = county_of(fleet.get(visit.caravan_id, {}).get("org_id"))
        for tally in (total_waiting, caravan_waiting[visit.caravan_id], county_waiting[county]):
            tally.add(visit, today)
    per_county: dict[ObjectId | None, Counter] = defaultdict(Counter)
    caravan_rows = []
    for caravan_id, figures in sorted(per_caravan.items()):
        caravan = fleet.get(caravan_id, {})
        per_county[county_of(caravan.get("org_id"))].update(
            {f: figures.get(f, 0) for f in CARAVAN_FIGURES}
        )
        caravan_rows.append(
            CaravanKpi(
                caravan_id=str(caravan_id),
                name=caravan.get("name", ""),
                plate=caravan.get("plate", ""),
                **_kpi(figures),
                pending=caravan_waiting[caravan_id].out(),
                target=targets.get(caravan_id),
            )
        )
    county_rows = [
        CountyKpi(
            org_id=str(county),
            name=nodes[county].name if county in nodes else "",
            **_kpi(figures),
            pending=county_waiting[county].out(),
        )
        for county, figures in sorted(per_county.items(), key=lambda kv: str(kv[0]))
    ]
    return Kpis(
        year=year,
        total=Kpi(**_kpi(doc.get("totals", {})), pending=total_waiting.out()),
        caravans=caravan_rows,
        counties=county_rows,
    )
