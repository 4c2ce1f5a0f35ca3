"""Publishing a plan: every planned visit becomes a published activity at its site, which
volunteers join as crew; once per plan, and safe to retry after an interrupted attempt.

A published visit may later be withdrawn (its request declined or cancelled: see
caravans.visit_requests), which cancels its activity; `withdrawn_visits` says which of a
plan's were, so its page shows them withdrawn rather than short of crew.

A planned stay becomes one activity per opening day (its opening hours, `shift_volunteers`
seats), so each day's volunteers earn that day's hours; each day's activity is noted on the
request as it is made, so a retried publication makes none twice."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from bson import ObjectId

from server.clock import SHANGHAI
from server.domain import activities, caravans, events, sites
from server.domain.caravans.visit_requests import record_stay_activity
from server.domain.errors import Conflict
from server.domain.ids import parse_id
from server.domain.planning.models import PlanOut, PublishedVisit, PublishOut, UnassignedOut
from server.domain.planning.plans import get_plan_doc
from server.domain.planning.problem import REASON_ALREADY_SCHEDULED

KIND_WORD = {
    "school": "校园",
    "village": "乡村",
    "community": "社区",
    "base": "基地",
    "other": "基层",
}


async def publish(ctx, plan_id, *, by: ObjectId, publisher_openid: str) -> PublishOut:
    """Every planned visit becomes a published activity at its site; once per plan."""
    plan = await get_plan_doc(ctx, plan_id)
    if plan.get("published_at"):
        return _published_out(plan)
    if plan["status"] != "done":
        raise Conflict("计划尚未求解完成，不能发布", code="plan_not_done")
    claimed = await _claim(ctx, plan["_id"])
    if claimed is None:
        current = await get_plan_doc(ctx, plan_id)
        if current.get("published_at"):
            return _published_out(current)
        raise Conflict("计划正在发布或正在重新规划", code="plan_busy")
    published, skipped = [], []
    try:
        fleet = await caravans.caravans_by_id(ctx, claimed["caravan_ids"])
        for route in claimed["routes"]:
            caravan = fleet[route["caravan_id"]]
            for stop in route["stops"]:
                activity_id = await _publish_visit(
                    ctx, claimed, caravan, route, stop, by, publisher_openid
                )
                if activity_id is None:
                    skipped.append(_already_scheduled(stop["request_id"]))
                else:
                    published.append({"request_id": stop["request_id"], "activity_id": activity_id})
        for stay in claimed.get("stays", []):
            days = await _publish_stay(
                ctx, claimed, fleet[stay["caravan_id"]], stay, by, publisher_openid
            )
            if days is None:
                skipped.append(_already_scheduled(stay["request_id"]))
            else:
                published.extend(
                    {"request_id": stay["request_id"], "activity_id": a, "date": d} for d, a in days
                )
    except BaseException:
        await ctx.db["plans"].update_one({"_id": plan["_id"]}, {"$set": {"publishing_until": None}})
        raise
    done = {
        "published_at": ctx.clock.now(),
        "published_by": by,
        "published": published,
        "skipped": skipped,
        "publishing_until": None,
    }
    await ctx.db["plans"].update_one({"_id": plan["_id"]}, {"$set": done})
    return _published_out(done)


async def _claim(ctx, plan_id: ObjectId) -> dict | None:
    """The plan, claimed for five minutes to publish; None while another publication holds it
    (or it is no longer a solved, unpublished plan). Two conditional updates by `_id`, never
    claimed or a claim run out, rather than one $or, which the embedded server scans; the first
    to match moves `publishing_until` out of both, so of several racing one wins."""
    now = ctx.clock.now()
    plans, ready = ctx.db["plans"], {"_id": plan_id, "status": "done", "published_at": None}
    claim = {"$set": {"publishing_until": now + timedelta(minutes=5)}}
    for free in (None, {"$lt": now}):
        if (await plans.update_one({**ready, "publishing_until": free}, claim)).matched_count:
            return await plans.find_one({"_id": plan_id})
    return None


async def _publish_visit(
    ctx, plan: dict, caravan: dict, route: dict, stop: dict, by, openid
) -> ObjectId | None:
    request = await caravans.claim_for_publish(ctx, stop["request_id"], plan["_id"])
    if request is None:
        current = await caravans.get_request_doc(ctx, stop["request_id"])
        if current.get("plan_id") == plan["_id"] and current.get("activity_id"):
            return current["activity_id"]  # published by an earlier, interrupted attempt
        return None
    activity_id = request.get("activity_id")
    if activity_id is None:
        site = await sites.get_site_doc(ctx, stop["site_id"])
        word = KIND_WORD.get(site["kind"], "基层")
        activity_id = await activities.create_activity(
            ctx,
            activities.NewActivity(
                title=f"科普大篷车进{word}·{site['name']}"[:60],
                description=(
                    f"{caravan['name']}（{caravan['plate']}）到{site['name']}开展科普大篷车活动，"
                    f"约 {request['duration_min']} 分钟。招募随车志愿者 {caravan['crew_size']} 名。"
                ),
                org_id=str(caravan["org_id"]),
                site_id=str(site["_id"]),
                starts_at=stop["start_at"],
                ends_at=stop["depart_at"],
                capacity=caravan["crew_size"],
                tags=[activities.CARAVAN_TAG],
            ),
            created_by=by,
        )
        await caravans.record_activity(ctx, request["_id"], activity_id)
    await activities.publish(ctx, activity_id, publisher_openid=openid)
    await caravans.mark_scheduled(
        ctx,
        request["_id"],
        caravan_id=caravan["_id"],
        day=route["date"],
        activity_id=activity_id,
        crew_duty_h=plan["max_duty_h"],
    )
    await events.emit(
        ctx,
        events.VISIT_SCHEDULED,
        request_id=request["_id"],
        site_id=stop["site_id"],
        activity_id=activity_id,
        caravan_id=caravan["_id"],
        plan_id=plan["_id"],
    )
    return activity_id


async def _publish_stay(
    ctx, plan: dict, caravan: dict, stay: dict, by, openid
) -> list[tuple[str, ObjectId]] | None:
    """The stay's activities, (day, activity id) per opening day; None when it is (being)
    scheduled by another plan."""
    request = await caravans.claim_for_publish(ctx, stay["request_id"], plan["_id"])
    if request is None:
        current = await caravans.get_request_doc(ctx, stay["request_id"])
        if current.get("plan_id") == plan["_id"] and current.get("stay_activities"):
            return sorted(current["stay_activities"].items())  # an earlier attempt's
        return None
    site = await sites.get_site_doc(ctx, stay["site_id"])
    made = dict(request.get("stay_activities", {}))
    first = date.fromisoformat(stay["first_day"])
    total = (date.fromisoformat(stay["last_day"]) - first).days + 1
    for n in range(total):
        day = (first + timedelta(days=n)).isoformat()
        if day not in made:
            made[day] = await activities.create_activity(
                ctx,
                activities.NewActivity(
                    title=f"流动科技馆进{site['name']}·第{n + 1}天"[:60],
                    description=(
                        f"{caravan['name']}在{site['name']}巡展第 {n + 1} 天（共 {total} 天），"
                        f"{request['open_from']}–{request['open_until']} 开放。"
                        f"招募当日志愿者 {request['shift_volunteers']} 名。"
                    ),
                    org_id=str(caravan["org_id"]),
                    site_id=str(site["_id"]),
                    starts_at=_local(day, request["open_from"]),
                    ends_at=_local(day, request["open_until"]),
                    capacity=request["shift_volunteers"],
                    tags=[activities.CARAVAN_TAG],
                ),
                created_by=by,
            )
            await record_stay_activity(ctx, request["_id"], day, made[day])
        await activities.publish(ctx, made[day], publisher_openid=openid)
    first_activity = made[stay["first_day"]]
    await caravans.mark_scheduled(
        ctx,
        request["_id"],
        caravan_id=caravan["_id"],
        day=stay["first_day"],
        activity_id=first_activity,
    )
    await events.emit(
        ctx,
        events.VISIT_SCHEDULED,
        request_id=request["_id"],
        site_id=stay["site_id"],
        activity_id=first_activity,
        caravan_id=caravan["_id"],
        plan_id=plan["_id"],
    )
    return sorted(made.items())


def _local(day: str, hhmm: str) -> datetime:
    at = datetime.combine(date.fromisoformat(day), time(), tzinfo=SHANGHAI)
    return (at + timedelta(minutes=sites.minutes(hhmm))).astimezone(UTC)


def _published_out(doc: dict) -> PublishOut:
    return PublishOut(
        status="published",
        published=[
            PublishedVisit(
                request_id=str(p["request_id"]),
                activity_id=str(p["activity_id"]),
                date=p.get("date"),
            )
            for p in doc.get("published", [])
        ],
        skipped=[
            UnassignedOut(request_id=str(s["request_id"]), reason=s["reason"], detail=s["detail"])
            for s in doc.get("skipped", [])
        ],
    )


def _already_scheduled(request_id) -> dict:
    detail = "已由其他计划排期"
    return {"request_id": request_id, "reason": REASON_ALREADY_SCHEDULED, "detail": detail}


async def withdrawn_visits(ctx, plan: PlanOut) -> dict[str, str]:
    """The plan's published visits withdrawn since: request id → the request's status
    (`declined` or `cancelled`)."""
    ids = [parse_id(p.request_id) for p in plan.published]
    requests = await caravans.requests_by_id(ctx, ids)
    return {
        str(request_id): r["status"]
        for request_id, r in requests.items()
        if r.get("withdrawn_at") and str(r.get("plan_id")) == plan.id
    }
