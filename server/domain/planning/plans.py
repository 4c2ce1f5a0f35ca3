"""Plans: creating one (its period, caravans and requests, checked), reading and listing
them, and the dispatcher's edits: pins, exclusions and re-planning, which hold across solves."""

from __future__ import annotations

from datetime import date, timedelta

from bson import ObjectId

from server import vrp
from server.domain import access, campaigns, caravans, orgs, sites
from server.domain.caravans.visit_requests import is_stay
from server.domain.errors import Conflict, InvalidRequest, NotFound
from server.domain.ids import fetch, parse_id
from server.domain.paging import page_by_id
from server.domain.planning.models import (
    MAX_TIME_LIMIT_S,
    NewPin,
    NewPlan,
    PinOut,
    PlanOut,
    PlanPage,
    PlanSummary,
    PlanTotals,
    PublishedVisit,
    Queued,
    RouteOut,
    StayOut,
    StopOut,
    UnassignedOut,
)
from server.domain.planning.problem import working_days
from server.domain.planning.solving import LEASE, is_stale, start_solving

MAX_DAYS = 62
DISPATCH = "plan.dispatch"  # the permission that references are checked for


# -- creating and reading ---------------------------------------------------------------------


async def _require_references(
    ctx, by: ObjectId | None, campaign: dict | None, caravan_ids, request_ids
) -> None:
    """A plan names only the campaign, caravans and requests its creator may dispatch."""
    if campaign:
        await access.require_each(ctx, by, DISPATCH, [campaign], "campaign_id")
    if caravan_ids:
        named = await caravans.caravans_by_id(ctx, caravan_ids)
        await access.require_each(ctx, by, DISPATCH, list(named.values()), "caravan_ids")
    if request_ids:
        named = await caravans.requests_by_id(ctx, request_ids)
        await access.require_each(ctx, by, DISPATCH, list(named.values()), "request_ids")


async def create_plan(
    ctx, new: NewPlan, *, created_by: ObjectId | None, start: bool = True
) -> ObjectId:
    org_id = parse_id(new.org_id, "org_id")
    await orgs.get_org(ctx, org_id)
    caravan_ids = [parse_id(c, "caravan_ids") for c in new.caravan_ids] if new.caravan_ids else None
    campaign_id = None
    if new.campaign_id is not None:
        campaign = await campaigns.get_campaign_doc(ctx, new.campaign_id)
        first, last, caravan_ids = _within_campaign(new, org_id, campaign, caravan_ids)
        campaign_id = campaign["_id"]
    elif new.start_date is None:
        raise InvalidRequest("请填写计划的开始日期", field="start_date")
    elif new.end_date is None:
        raise InvalidRequest("请填写计划的结束日期", field="end_date")
    else:
        first, last = new.start_date, new.end_date
    if last < first:
        raise InvalidRequest("结束日期不能早于开始日期", field="end_date")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidRequest(f"计划期不能超过 {MAX_DAYS} 天", field="end_date")
    if sites.minutes(new.duty_start) >= sites.minutes(new.duty_end):
        raise InvalidRequest("出车时段的开始须早于结束", field="duty_start")
    request_ids = (
        [parse_id(r, "request_ids") for r in new.request_ids]
        if new.request_ids is not None
        else None
    )
    await _require_references(
        ctx, created_by, new.campaign_id and campaign, caravan_ids, request_ids
    )
    fleet = await caravans.caravans_for_plan(ctx, org_id, caravan_ids)
    if campaign_id is None:
        # A caravan lent to a campaign is the campaign's on its days.
        fleet = await campaigns.outside_campaigns(ctx, fleet, first, last, named=bool(caravan_ids))
    if not fleet:
        raise InvalidRequest("该组织在计划期内没有可用的大篷车", field="caravan_ids")
    requests = await caravans.open_requests(ctx, org_id, first, last, request_ids)
    now = ctx.clock.now()
    doc = {
        "_id": ObjectId(),
        "org_id": org_id,
        "campaign_id": campaign_id,
        "start_date": first.isoformat(),
        "end_date": last.isoformat(),
        "weekdays": sorted(set(new.weekdays)),
        "duty_start": new.duty_start,
        "duty_end": new.duty_end,
        "max_duty_h": new.max_duty_h,
        # Without a request, the default scaled below; each solve scales it to the plan anew.
        "time_limit_s": new.time_limit_s,
        "requested_time_limit_s": new.time_limit_s,
        "caravan_ids": [c["_id"] for c in fleet],
        "request_ids": [r["_id"] for r in requests],
        "pins": [],
        "excluded": [],
        "status": "queued",
        # Until this process's solve claims it; a plan whose creator died is recovered after.
        "lease_holder": None,
        "lease_until": now + timedelta(seconds=LEASE.seconds),
        "attempts": 0,
        "progress": 0.0,
        "best_cost": None,
        "routes": [],
        "unassigned": [],
        "total_distance_km": 0.0,
        "runs": 0,
        "error": None,
        "created_by": created_by,
        "created_at": now,
        "started_at": None,
        "finished_at": None,
        "published_at": None,
        "published": [],
    }
    days = working_days(doc)
    if not days:
        raise InvalidRequest("计划期内没有工作日", field="weekdays")
    if new.time_limit_s is None:
        doc["time_limit_s"] = vrp.scaled_time_limit_s(
            len(requests), len(fleet) * len(days), MAX_TIME_LIMIT_S
        )
    await ctx.db["plans"].insert_one(doc)
    if start:
        start_solving(ctx, doc["_id"])
    return doc["_id"]


def _within_campaign(
    new: NewPlan, org_id: ObjectId, campaign: dict, caravan_ids: list[ObjectId] | None
) -> tuple[date, date, list[ObjectId]]:
    """The period and caravans of a campaign's plan: the campaign's, or part of them."""
    if campaign["org_id"] != org_id:
        raise InvalidRequest("该巡回行动不属于计划的组织", field="campaign_id")
    opens = date.fromisoformat(campaign["start_date"])
    closes = date.fromisoformat(campaign["end_date"])
    first, last = new.start_date or opens, new.end_date or closes
    period = f"巡回行动期间（{campaign['start_date']} 至 {campaign['end_date']}）"
    if not opens <= first <= closes:
        raise InvalidRequest(f"开始日期须在{period}之内", field="start_date")
    if not opens <= last <= closes:
        raise InvalidRequest(f"结束日期须在{period}之内", field="end_date")
    if caravan_ids is None:
        return first, last, campaign["caravan_ids"]
    if not set(caravan_ids) <= set(campaign["caravan_ids"]):
        raise InvalidRequest("部分大篷车不在该巡回行动中", field="caravan_ids")
    return first, last, caravan_ids


async def get_plan_doc(ctx, plan_id) -> dict:
    return await fetch(ctx.db["plans"], plan_id, "plan_id", "计划不存在")


async def plan_org(ctx, plan_id) -> ObjectId:
    doc = await ctx.db["plans"].find_one({"_id": parse_id(plan_id, "plan_id")}, {"org_id": 1})
    if doc is None:
        raise NotFound("计划不存在", field="plan_id")
    return doc["org_id"]


async def _plan_out(ctx, doc: dict) -> PlanOut:
    stop_sites = {s["site_id"] for r in doc["routes"] for s in r["stops"]}
    stop_sites |= {s["site_id"] for s in doc.get("stays", [])}
    names = await sites.briefs(ctx, list(stop_sites)) if stop_sites else {}
    return PlanOut(
        id=str(doc["_id"]),
        org_id=str(doc["org_id"]),
        campaign_id=str(doc["campaign_id"]) if doc.get("campaign_id") else None,
        status=doc["status"],
        progress=round(doc.get("progress", 0.0), 3),
        best_cost=None if doc.get("best_cost") is None else int(doc["best_cost"]),
        start_date=doc["start_date"],
        end_date=doc["end_date"],
        time_limit_s=doc["time_limit_s"],
        requested_time_limit_s=doc.get("requested_time_limit_s", doc["time_limit_s"]),
        iterations=doc.get("iterations", 0),
        searches=doc.get("searches", 0),
        caravan_ids=[str(c) for c in doc["caravan_ids"]],
        request_ids=[str(r) for r in doc["request_ids"]],
        routes=[
            RouteOut(
                caravan_id=str(r["caravan_id"]),
                date=r["date"],
                depot_id=str(r["depot_id"]),
                end_depot_id=str(r["end_depot_id"]),
                leave_at=r["leave_at"],
                return_at=r["return_at"],
                stops=[
                    StopOut(
                        site_id=str(s["site_id"]),
                        request_id=str(s["request_id"]),
                        arrive_at=s["arrive_at"],
                        start_at=s["start_at"],
                        depart_at=s["depart_at"],
                        site_name=names.get(s["site_id"], {}).get("name", ""),
                    )
                    for s in r["stops"]
                ],
                distance_km=r["distance_km"],
                duration_min=r["duration_min"],
            )
            for r in doc["routes"]
        ],
        unassigned=[
            UnassignedOut(request_id=str(u["request_id"]), reason=u["reason"], detail=u["detail"])
            for u in doc["unassigned"]
        ],
        total_distance_km=doc["total_distance_km"],
        pins=[
            PinOut(request_id=str(p["request_id"]), caravan_id=str(p["caravan_id"]), date=p["date"])
            for p in doc["pins"]
        ],
        excluded=[str(r) for r in doc["excluded"]],
        runs=doc["runs"],
        totals=_totals(doc.get("totals")),
        previous=_totals(doc.get("previous")),
        error=doc.get("error"),
        created_at=doc["created_at"],
        started_at=doc.get("started_at"),
        finished_at=doc.get("finished_at"),
        published_at=doc.get("published_at"),
        published=[
            PublishedVisit(
                request_id=str(p["request_id"]),
                activity_id=str(p["activity_id"]),
                date=p.get("date"),
            )
            for p in doc.get("published", [])
        ],
        stays=[
            StayOut(
                **{f: str(s[f]) for f in ("request_id", "site_id", "caravan_id", "depot_id")},
                **{f: s[f] for f in ("setup_from", "first_day", "last_day", "teardown_until")},
                distance_km=s["distance_km"],
                site_name=names.get(s["site_id"], {}).get("name", ""),
            )
            for s in doc.get("stays", [])
        ],
    )


def _totals(stored: dict | None) -> PlanTotals | None:
    return None if stored is None else PlanTotals(**stored)


async def get_plan(ctx, plan_id) -> PlanOut:
    doc = await get_plan_doc(ctx, plan_id)
    if is_stale(ctx, doc) and doc["_id"] not in ctx.solves:
        # Its solver's process died: the reader's process takes it over (if it wins the claim).
        start_solving(ctx, doc["_id"])
    return await _plan_out(ctx, doc)


async def list_plans(ctx, org_ids: list[ObjectId], cursor: str | None, limit: int) -> PlanPage:
    """The plans of these organisations, newest first, without their routes."""
    docs, following = await page_by_id(
        ctx.db["plans"],
        {"org_id": {"$in": org_ids}},
        cursor,
        limit,
        newest_first=True,
        projection={"routes.stops": 0, "pins": 0, "excluded": 0, "published": 0},
    )
    items = [
        PlanSummary(
            id=str(d["_id"]),
            org_id=str(d["org_id"]),
            campaign_id=str(d["campaign_id"]) if d.get("campaign_id") else None,
            status=d["status"],
            progress=round(d.get("progress", 0.0), 3),
            start_date=d["start_date"],
            end_date=d["end_date"],
            caravans=len(d["caravan_ids"]),
            requests=len(d["request_ids"]),
            routes=len(d["routes"]),
            unassigned=len(d["unassigned"]),
            total_distance_km=d["total_distance_km"],
            error=d.get("error"),
            created_at=d["created_at"],
            finished_at=d.get("finished_at"),
            published_at=d.get("published_at"),
        )
        for d in docs
    ]
    return PlanPage(items=items, next_cursor=following)


# -- pins, exclusions, re-planning ------------------------------------------------------------


def _editable(plan: dict) -> None:
    if plan.get("published_at") or plan.get("publishing_until"):
        raise Conflict("计划已发布，不能再修改", code="plan_published")


async def pin(ctx, plan_id, new: NewPin) -> PlanOut:
    plan = await get_plan_doc(ctx, plan_id)
    _editable(plan)
    request_id = parse_id(new.request_id, "request_id")
    caravan_id = parse_id(new.caravan_id, "caravan_id")
    if request_id not in plan["request_ids"]:
        raise InvalidRequest("该走访申请不在本计划中", field="request_id")
    if caravan_id not in plan["caravan_ids"]:
        raise InvalidRequest("该大篷车不在本计划中", field="caravan_id")
    day = new.date.isoformat()
    if is_stay(await caravans.get_request_doc(ctx, request_id)):
        # A stay's pin is its first opening day, on any day of the period.
        if not plan["start_date"] <= day <= plan["end_date"]:
            raise InvalidRequest("该日期不在计划期内", field="date")
    elif day not in working_days(plan):
        raise InvalidRequest("该日期不是计划期内的工作日", field="date")
    pins = [p for p in plan["pins"] if p["request_id"] != request_id]
    pins.append({"request_id": request_id, "caravan_id": caravan_id, "date": day})
    excluded = [r for r in plan["excluded"] if r != request_id]
    return await _set_edits(ctx, plan, pins, excluded)


async def unpin(ctx, plan_id, request_id) -> PlanOut:
    plan = await get_plan_doc(ctx, plan_id)
    _editable(plan)
    request_id = parse_id(request_id, "request_id", missing_is_not_found=True)
    pins = [p for p in plan["pins"] if p["request_id"] != request_id]
    return await _set_edits(ctx, plan, pins, plan["excluded"])


async def exclude(ctx, plan_id, request_id) -> PlanOut:
    plan = await get_plan_doc(ctx, plan_id)
    _editable(plan)
    request_id = parse_id(request_id, "request_id")
    if request_id not in plan["request_ids"]:
        raise InvalidRequest("该走访申请不在本计划中", field="request_id")
    pins = [p for p in plan["pins"] if p["request_id"] != request_id]
    excluded = [*(r for r in plan["excluded"] if r != request_id), request_id]
    return await _set_edits(ctx, plan, pins, excluded)


async def _set_edits(ctx, plan: dict, pins: list[dict], excluded: list[ObjectId]) -> PlanOut:
    edited = await ctx.db["plans"].update_one(
        {"_id": plan["_id"], "published_at": None},
        {"$set": {"pins": pins, "excluded": excluded}},
    )
    if not edited.matched_count:
        raise Conflict("计划已发布，不能再修改", code="plan_published")
    return await _plan_out(ctx, await ctx.db["plans"].find_one({"_id": plan["_id"]}))


async def replan(ctx, plan_id) -> Queued:
    plan = await get_plan_doc(ctx, plan_id)
    _editable(plan)
    queued = await ctx.db["plans"].update_one(
        {"_id": plan["_id"], "status": {"$in": ["done", "failed"]}, "published_at": None},
        {
            "$set": {
                "status": "queued",
                "progress": 0.0,
                "best_cost": None,
                "error": None,
                "lease_holder": None,
                "lease_until": ctx.clock.now() + timedelta(seconds=LEASE.seconds),
                "attempts": 0,
            }
        },
    )
    if not queued.matched_count:
        raise Conflict("计划正在求解，请等它结束再重新规划", code="plan_running")
    start_solving(ctx, plan["_id"])
    return Queued(id=str(plan["_id"]), status="queued")
