"""The console's 首页: what needs attention in an organisation's subtree, at a glance.

Owns nothing. Reads `activities` (this month's) and `visit_requests` (scheduled caravan visits)
by indexed shapes, the pending credits through `hours.pending_in_scope`, open disputes through
`disputes`, and the year's figures through `stats.report`. Each panel is shown only to someone
holding its permission there (the table in `access`); a site admin named for one site sees that
site's pending hours and visits.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from bson import ObjectId

from server.clock import SHANGHAI
from server.domain import access, activities, caravans, disputes, hours, orgs, sites, stats
from server.domain.ids import parse_id

LISTED = 10  # rows per panel
COUNTED = 100  # open disputes counted on the panel; the 服务时长 page lists them all


class Scope(msgspec.Struct):
    org_id: str
    org_name: str
    choices: list[orgs.Org]  # the organisations where the caller holds a role


class ActivityRow(msgspec.Struct):
    id: str
    title: str
    status: str
    starts_at: datetime
    ends_at: datetime
    capacity: int
    confirmed_count: int


class PendingRow(msgspec.Struct):
    activity_id: str | None
    title: str
    records: int
    hours: float
    oldest_at: datetime


class VisitRow(msgspec.Struct):
    request_id: str
    date: str
    site_name: str
    caravan_name: str | None


class Panel(msgspec.Struct):
    total: int
    rows: list


class Overview(msgspec.Struct):
    scope: Scope
    month: str  # "2026-03"
    activities: Panel | None  # None: the caller may not see this panel here
    pending_hours: Panel | None
    disputes: Panel | None  # open disputes, oldest first (rows: disputes.DisputeOut)
    visits: Panel | None
    report: stats.Report | None


def _home(grants: list[dict], lineages: dict[ObjectId, orgs.OrgNode]) -> ObjectId:
    """The highest organisation the caller holds a role in."""
    return min(
        (g["org_id"] for g in grants),
        key=lambda o: (len(lineages[o].lineage) if o in lineages else 99, str(o)),
    )


def _month(now: datetime) -> tuple[datetime, datetime]:
    local = now.astimezone(SHANGHAI)
    start = datetime(local.year, local.month, 1, tzinfo=SHANGHAI)
    following = (local.year + local.month // 12, local.month % 12 + 1)
    return start, datetime(*following, 1, tzinfo=SHANGHAI)


async def _within(ctx, user_id, permission: str, org_id: ObjectId, subtree: list) -> list:
    return subtree if await access.may(ctx, user_id, permission, org_id=org_id) else []


def _sites_for(grants: list[dict], permission: str, home: bool) -> list[ObjectId]:
    """Sites the caller was named admin of, when the permission reaches them (home view)."""
    if not home or "site_admin" not in access.roles_holding(permission):
        return []
    return sorted({g["site_id"] for g in grants if g.get("site_id")})


async def overview(ctx, user_id: ObjectId, org_id: str | None = None) -> Overview:
    """The 首页 of `org_id`'s subtree (the caller must hold a role there), or of the highest
    organisation the caller holds a role in."""
    grants = await access.grants_of(ctx, user_id)
    held = sorted({g["org_id"] for g in grants})
    nodes = await orgs.nodes(ctx, held)
    if org_id is None:
        org = _home(grants, nodes)
    else:
        org = parse_id(org_id, "org_id")
        await access.require(ctx, user_id, "org.read", org_id=org)
    [described] = await orgs.describe(ctx, [org])
    subtree = await orgs.subtree_ids(ctx, org)
    home = org_id is None
    now = ctx.clock.now()
    start, end = _month(now)

    async def panel(permission: str, build):
        org_ids = await _within(ctx, user_id, permission, org, subtree)
        site_ids = _sites_for(grants, permission, home)
        if not org_ids and not site_ids:
            return None
        return await build(org_ids, site_ids)

    async def month_activities(org_ids, _site_ids):
        return await _activities(ctx, org_ids, start, end, now)

    async def pending(org_ids, site_ids):
        return await _pending_hours(ctx, org_ids, site_ids)

    async def open_disputes(org_ids, site_ids):
        page = await disputes.list_disputes(
            ctx, org_ids=org_ids, site_ids=site_ids, status="open", cursor=None,
            limit=COUNTED,
        )  # fmt: skip
        return Panel(total=len(page.items), rows=page.items[:LISTED])

    async def visits(org_ids, site_ids):
        return await _visits(ctx, org_ids, site_ids, now.astimezone(SHANGHAI).date().isoformat())

    report = None
    if await access.may(ctx, user_id, "stats.read", org_id=org):
        year = now.astimezone(SHANGHAI).year
        report = await stats.report(ctx, org, stats.Period.calendar_year(year))
    return Overview(
        scope=Scope(
            org_id=str(org), org_name=described.name, choices=await orgs.describe(ctx, held)
        ),
        month=f"{start.year:04d}-{start.month:02d}",
        activities=await panel("activity.organise", month_activities),
        pending_hours=await panel("hours.confirm", pending),
        disputes=await panel("hours.confirm", open_disputes),
        visits=await panel("visit.read", visits),
        report=report,
    )


async def _activities(ctx, org_ids: list, start: datetime, end: datetime, now) -> Panel:
    if not org_ids:
        return Panel(total=0, rows=[])
    query = {"org_id": {"$in": org_ids}, "starts_at": {"$gte": start, "$lt": end}}
    fields = {"title": 1, "status": 1, "starts_at": 1, "ends_at": 1, "capacity": 1,
              "confirmed_count": 1}  # fmt: skip
    docs = await ctx.db["activities"].find(query, fields).sort([("starts_at", 1)]).to_list(None)
    rows = [
        ActivityRow(
            id=str(d["_id"]),
            title=d["title"],
            status=activities.effective_status(d, now),
            starts_at=d["starts_at"],
            ends_at=d["ends_at"],
            capacity=d["capacity"],
            confirmed_count=d.get("confirmed_count", 0),
        )
        for d in docs
    ]
    return Panel(total=len(rows), rows=rows[:LISTED])


async def _pending_hours(ctx, org_ids: list, site_ids: list) -> Panel:
    """Pending credits grouped by activity, the longest waiting first."""
    credits = await hours.pending_in_scope(
        ctx, org_ids, site_ids, {"activity_id": 1, "hours": 1, "at": 1}
    )
    groups: dict = {}
    for c in credits:
        g = groups.setdefault(c.get("activity_id"), {"records": 0, "hours": 0.0, "at": c["at"]})
        g["records"] += 1
        g["hours"] += c["hours"]
        g["at"] = min(g["at"], c["at"])
    titles = await activities.titles(ctx, [a for a in groups if a is not None])
    rows = sorted(
        (
            PendingRow(
                activity_id=str(a) if a else None,
                title=titles.get(a, "（无活动）"),
                records=g["records"],
                hours=round(g["hours"], 2),
                oldest_at=g["at"],
            )
            for a, g in groups.items()
        ),
        key=lambda r: r.oldest_at,
    )
    return Panel(total=len(credits), rows=rows[:LISTED])


async def _visits(ctx, org_ids: list, site_ids: list, today: str) -> Panel:
    """Scheduled caravan visits from today on, the soonest first."""
    upcoming = {"status": "scheduled", "date": {"$gte": today}}
    queries = [{"org_id": {"$in": org_ids}, **upcoming}] if org_ids else []
    if site_ids:
        queries.append({"site_id": {"$in": site_ids}, **upcoming})
    found: dict[ObjectId, dict] = {}
    for query in queries:
        fields = {"site_id": 1, "caravan_id": 1, "date": 1}
        async for doc in ctx.db["visit_requests"].find(query, fields):
            found[doc["_id"]] = doc
    docs = sorted(found.values(), key=lambda d: (d["date"], d["_id"]))
    shown = docs[:LISTED]
    site_names = await sites.briefs(ctx, [d["site_id"] for d in shown])
    caravan_ids = [d["caravan_id"] for d in shown if d.get("caravan_id")]
    fleet = await caravans.caravans_by_id(ctx, caravan_ids)
    rows = [
        VisitRow(
            request_id=str(d["_id"]),
            date=d["date"],
            site_name=site_names.get(d["site_id"], {}).get("name", "—"),
            caravan_name=fleet[d["caravan_id"]]["name"] if d.get("caravan_id") in fleet else None,
        )
        for d in shown
    ]
    return Panel(total=len(docs), rows=rows)
