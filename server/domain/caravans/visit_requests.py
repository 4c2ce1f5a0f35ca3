"""Visit requests: a site asks for a caravan visit within a range of days, or for a stay.

A stay (a 流动科技馆 tour at the site) asks for `duration_days` consecutive opening days within
the range, open `open_from`–`open_until` every one of them (weekends included), with
`shift_volunteers` volunteers wanted each day. The unit occupies the site `setup_days` before
the first opening day and `teardown_days` after the last (set-up and tear-down, 0–7 days
each, one by default); these lie outside the range but inside the plan's period. A stay's
`duration_min` is the length of its opening day. Once published, `stay_activities` maps each
opening day (ISO date) to its activity; `activity_id` is the first day's.

A request moves open → scheduling → scheduled: `claim_for_publish` takes an open request (or one
whose publication stalled) for one plan's publication, `record_activity` notes the activity made
for it, `mark_scheduled` ends the publication. A request may instead be declined (by a
dispatcher, with a reason the site's admins are told) or cancelled (by the site's admin or a
dispatcher); neither is planned or published again.

A scheduled request was published as an activity volunteers joined as crew: declining or
cancelling it withdraws the visit, which cancels that activity (its crew are told, their seats
freed). Once a trip has logged the visit, or its activity has ended, it is no longer withdrawn.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Literal

import msgspec
from bson import ObjectId

from server.domain import activities, events, orgs, signups, sites
from server.domain.errors import Conflict, InvalidRequest
from server.domain.ids import fetch, parse_id
from server.domain.paging import page_by_id_any
from server.domain.text import HHMM, line, lines

RequestStatus = Literal["open", "scheduling", "scheduled", "declined", "cancelled"]
CLOSED = ("declined", "cancelled")
STALE_CLAIM = timedelta(minutes=2)


StayDays = Annotated[int, msgspec.Meta(ge=0, le=7)]


class NewVisitRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A day visit (`duration_min`, 30–480) or a stay (`duration_days`, 1–60, with its daily
    opening hours, set-up and tear-down days and volunteers per day); exactly one of the two."""

    site_id: str
    earliest_date: date
    latest_date: date
    duration_min: Annotated[int, msgspec.Meta(ge=30, le=480)] | None = None
    audience: line(100, 0) | None = None
    priority: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5
    duration_days: Annotated[int, msgspec.Meta(ge=1, le=60)] | None = None
    open_from: HHMM = "09:00"
    open_until: HHMM = "17:00"
    setup_days: StayDays = 1
    teardown_days: StayDays = 1
    shift_volunteers: Annotated[int, msgspec.Meta(ge=1, le=200)] = 6


class VisitRequestOut(msgspec.Struct):
    id: str
    site_id: str
    org_id: str
    earliest_date: str
    latest_date: str
    duration_min: int
    audience: str | None
    priority: int
    status: str
    caravan_id: str | None
    date: str | None
    activity_id: str | None
    created_at: datetime
    reason: str | None = None  # why it was declined
    withdrawn_at: datetime | None = None  # when its scheduled visit was withdrawn
    stay: StayOut | None = None  # a stay's days, hours and volunteers; None for a day visit


class StayOut(msgspec.Struct):
    """What a stay asks for; `date` of the request is then its first opening day."""

    duration_days: int
    open_from: str
    open_until: str
    setup_days: int
    teardown_days: int
    shift_volunteers: int


class Decline(msgspec.Struct, forbid_unknown_fields=True):
    reason: lines(200)


class VisitRequestPage(msgspec.Struct):
    items: list[VisitRequestOut]
    next_cursor: str | None


async def create_request(
    ctx, new: NewVisitRequest, *, created_by: ObjectId | None = None
) -> ObjectId:
    stay = _stay_fields(new)
    site = await sites.get_site_doc(ctx, new.site_id)
    if new.latest_date < new.earliest_date:
        raise InvalidRequest("最晚日期不能早于最早日期", field="latest_date")
    if new.latest_date < ctx.clock.local_now().date():
        raise InvalidRequest("最晚日期已过", field="latest_date")
    duration_min = new.duration_min
    if stay:
        if (new.latest_date - new.earliest_date).days + 1 < new.duration_days:
            raise InvalidRequest("日期范围短于驻留天数", field="duration_days")
        duration_min = sites.minutes(new.open_until) - sites.minutes(new.open_from)
    doc = request_doc(
        ctx,
        site,
        new.earliest_date,
        new.latest_date,
        duration_min,
        new.audience,
        new.priority,
        created_by,
        **stay,
    )
    await ctx.db["visit_requests"].insert_one(doc)
    return doc["_id"]


def _stay_fields(new: NewVisitRequest) -> dict:
    """The stay's fields of a new request (none for a day visit), checked."""
    if new.duration_days is None:
        if new.duration_min is None:
            raise InvalidRequest(
                "请填写走访时长 duration_min，或驻留天数 duration_days", field="duration_min"
            )
        return {}
    if new.duration_min is not None:
        raise InvalidRequest("驻留按天计，不能同时填写 duration_min", field="duration_min")
    if sites.minutes(new.open_from) >= sites.minutes(new.open_until):
        raise InvalidRequest("每天开放时间的开始须早于结束", field="open_from")
    return {
        "duration_days": new.duration_days,
        "open_from": new.open_from,
        "open_until": new.open_until,
        "setup_days": new.setup_days,
        "teardown_days": new.teardown_days,
        "shift_volunteers": new.shift_volunteers,
    }


def is_stay(request: dict) -> bool:
    return request.get("duration_days") is not None


def request_doc(
    ctx,
    site: dict,
    earliest: date,
    latest: date,
    duration_min: int,
    audience: str | None,
    priority: int,
    created_by: ObjectId | None,
    **state,
) -> dict:
    """The one shape of a visit request (open, unless `state` says how far it got)."""
    return {
        "_id": ObjectId(),
        "site_id": site["_id"],
        "org_id": site["org_id"],
        "earliest_date": earliest.isoformat(),
        "latest_date": latest.isoformat(),
        "duration_min": duration_min,
        "audience": audience if audience is not None else site.get("audience"),
        "priority": priority,
        "status": "open",
        "created_by": created_by,
        "created_at": ctx.clock.now(),
        **state,
    }


async def get_request_doc(ctx, request_id) -> dict:
    return await fetch(ctx.db["visit_requests"], request_id, "request_id", "走访申请不存在")


async def open_requests(
    ctx, org_id: ObjectId, start: date, end: date, request_ids: list[ObjectId] | None
) -> list[dict]:
    """Open requests of the organisation's subtree whose date range meets [start, end]."""
    query: dict = {
        "org_id": {"$in": await orgs.subtree_ids(ctx, org_id)},
        "status": "open",
        "earliest_date": {"$lte": end.isoformat()},
        "latest_date": {"$gte": start.isoformat()},
    }
    if request_ids is not None:
        query["_id"] = {"$in": request_ids}
    docs = await ctx.db["visit_requests"].find(query).sort([("_id", 1)]).to_list(None)
    if request_ids is not None and len(docs) != len(set(request_ids)):
        raise InvalidRequest(
            "部分走访申请不存在、不属于该组织、已排期或不在计划日期内", field="request_ids"
        )
    return docs


async def requests_by_id(ctx, request_ids: list[ObjectId]) -> dict[ObjectId, dict]:
    cursor = ctx.db["visit_requests"].find({"_id": {"$in": request_ids}})
    return {doc["_id"]: doc async for doc in cursor}


async def list_requests(
    ctx,
    org_ids: list[ObjectId],
    *,
    site_ids: list[ObjectId] = (),
    status: str | None = None,
    site_id: str | None = None,
    start: date | None = None,
    end: date | None = None,
    cursor: str | None = None,
    limit: int,
) -> VisitRequestPage:
    """Requests of these organisations and of these sites, oldest first; with a date range,
    those that may be visited within it (the ones a plan over that range would consider)."""
    query: dict = {}
    if status is not None:
        query["status"] = status
    if site_id is not None:
        query["site_id"] = parse_id(site_id, "site_id")
    if start is not None:
        query["latest_date"] = {"$gte": start.isoformat()}
    if end is not None:
        check_range(start, end)
        query["earliest_date"] = {"$lte": end.isoformat()}
    scopes = [{"org_id": {"$in": org_ids}}] if org_ids else []
    if wanted := [s for s in site_ids if query.get("site_id", s) == s]:
        scopes.append({"site_id": {"$in": wanted}})
    docs, following = await page_by_id_any(
        ctx.db["visit_requests"], [{**query, **scope} for scope in scopes], cursor, limit
    )
    items = [_out(d) for d in docs]
    return VisitRequestPage(items=items, next_cursor=following)


def check_range(start: date | None, end: date) -> None:
    if start is not None and end < start:
        raise InvalidRequest("结束日期不能早于开始日期", field="to")


async def claim_for_publish(ctx, request_id: ObjectId, plan_id: ObjectId) -> dict | None:
    """Takes the request for one plan's publication; None when it is (being) scheduled."""
    now = ctx.clock.now()
    # Conditional updates by `_id` (open, or a stalled claim), then a read: a findAndModify or an
    # $or would scan the collection on the embedded server. What is read is this claim's: the
    # first update to match moves the request out of both, and no other takes it before it stalls.
    requests = ctx.db["visit_requests"]
    claim = {"$set": {"status": "scheduling", "plan_id": plan_id, "claim_until": now + STALE_CLAIM}}
    for free in ({"status": "open"}, {"status": "scheduling", "claim_until": {"$lt": now}}):
        if (await requests.update_one({"_id": request_id, **free}, claim)).matched_count:
            return await requests.find_one({"_id": request_id})
    return None


async def record_activity(ctx, request_id: ObjectId, activity_id: ObjectId) -> None:
    await ctx.db["visit_requests"].update_one(
        {"_id": request_id}, {"$set": {"activity_id": activity_id}}
    )


async def record_stay_activity(ctx, request_id: ObjectId, day: str, activity_id: ObjectId) -> None:
    """Notes the activity of one opening day of a stay being published."""
    await ctx.db["visit_requests"].update_one(
        {"_id": request_id}, {"$set": {f"stay_activities.{day}": activity_id}}
    )


async def mark_scheduled(
    ctx,
    request_id: ObjectId,
    *,
    caravan_id: ObjectId,
    day: str,
    activity_id: ObjectId,
    crew_duty_h: float | None = None,
) -> None:
    """Ends the publication. ``crew_duty_h`` is the longest duty day of the plan the visit is
    in: the crew's day is the drive there and back, not only the show (the activity)."""
    await ctx.db["visit_requests"].update_one(
        {"_id": request_id},
        {
            "$set": {
                "status": "scheduled",
                "caravan_id": caravan_id,
                "date": day,
                "activity_id": activity_id,
                "crew_duty_h": crew_duty_h,
                "scheduled_at": ctx.clock.now(),
            },
            "$unset": {"claim_until": ""},
        },
    )


async def crew_duty_h(ctx, activity_id: ObjectId) -> float | None:
    """The crew's duty day of the visit whose activity this is (None: no such visit, or one
    scheduled before duty days were kept)."""
    doc = await ctx.db["visit_requests"].find_one({"activity_id": activity_id}, {"crew_duty_h": 1})
    return doc.get("crew_duty_h") if doc else None


async def decline(ctx, request_id, reason: str, *, by: ObjectId | None) -> VisitRequestOut:
    """A dispatcher turns a request down (withdrawing its visit if scheduled); the site's
    admins are told why."""
    reason = reason.strip()
    if not reason:
        raise InvalidRequest("请填写拒绝理由", field="reason")
    doc = await _close(ctx, request_id, "declined", by, reason=reason)
    await events.emit(
        ctx, events.VISIT_REQUEST_DECLINED, request_id=doc["_id"], site_id=doc["site_id"],
        reason=reason,
    )  # fmt: skip
    return _out(doc)


async def cancel(ctx, request_id, *, by: ObjectId | None) -> VisitRequestOut:
    """The site's admin (or a dispatcher) withdraws a request, and its visit if scheduled."""
    return _out(await _close(ctx, request_id, "cancelled", by))


_REFUSALS = {
    "scheduling": "申请正在发布中，不能{verb}",
    "declined": "申请已被拒绝",
    "cancelled": "申请已取消",
}
_ACTIVITY_REASONS = {
    "declined": "调度员撤回了这次大篷车走访",
    "cancelled": "学校取消了这次大篷车走访",
}


async def _close(ctx, request_id, status: str, by: ObjectId | None, **extra) -> dict:
    """Compare-and-set from open, or from scheduled by withdrawing the visit, by `_id` (no
    findAndModify, no $or: see claim_for_publish)."""
    requests = ctx.db["visit_requests"]
    doc = await get_request_doc(ctx, request_id)
    change = {"status": status, f"{status}_by": by, f"{status}_at": ctx.clock.now(), **extra}
    done = await requests.update_one({"_id": doc["_id"], "status": "open"}, {"$set": change})
    current = await requests.find_one({"_id": doc["_id"]})
    if not done.matched_count:
        verb = "拒绝" if status == "declined" else "取消"
        if current["status"] == "scheduled":
            return await _withdraw(ctx, current, change, verb)
        raise Conflict(_REFUSALS[current["status"]].format(verb=verb), code="request_closed")
    return current


async def _withdraw(ctx, doc: dict, change: dict, verb: str) -> dict:
    """Close a scheduled request and cancel its visit's activity, unless the visit took place."""
    requests = ctx.db["visit_requests"]
    if await _visited(ctx, doc["_id"]):
        raise Conflict(f"该走访已登记出车，不能{verb}", code="visit_logged")
    activity = await activities.get_doc(ctx, doc["activity_id"])
    if activities.effective_status(activity, ctx.clock.now()) == "finished":
        raise Conflict(f"走访时间已过，不能{verb}", code="visit_over")
    change = {**change, "withdrawn_at": ctx.clock.now()}
    done = await requests.update_one({"_id": doc["_id"], "status": "scheduled"}, {"$set": change})
    if not done.matched_count:
        current = await requests.find_one({"_id": doc["_id"]})
        raise Conflict(_REFUSALS[current["status"]].format(verb=verb), code="request_closed")
    # Checked again after the write: a trip logged meanwhile keeps the visit (see trips).
    if await _visited(ctx, doc["_id"]):
        await _reschedule(ctx, doc["_id"], change)
        raise Conflict(f"该走访已登记出车，不能{verb}", code="visit_logged")
    try:
        # The first day's first: whether it is over decides, as for a day visit.
        later = [a for a in doc.get("stay_activities", {}).values() if a != doc["activity_id"]]
        for activity_id in [doc["activity_id"], *later]:
            await signups.cancel_activity(
                ctx, activity_id, reason=_ACTIVITY_REASONS[change["status"]]
            )
    except Conflict:  # the activity ended in the meantime
        await _reschedule(ctx, doc["_id"], change)
        raise Conflict(f"走访时间已过，不能{verb}", code="visit_over") from None
    return await requests.find_one({"_id": doc["_id"]})


async def _visited(ctx, request_id: ObjectId) -> bool:
    return await ctx.db["trips"].find_one({"visits.request_id": request_id}, {"_id": 1}) is not None


async def _reschedule(ctx, request_id: ObjectId, change: dict) -> None:
    """Undo a withdrawal refused after its write."""
    await ctx.db["visit_requests"].update_one(
        {"_id": request_id, "status": change["status"]},
        {"$set": {"status": "scheduled"}, "$unset": {k: "" for k in change if k != "status"}},
    )


def _out(d: dict) -> VisitRequestOut:
    return VisitRequestOut(
        id=str(d["_id"]),
        site_id=str(d["site_id"]),
        org_id=str(d["org_id"]),
        earliest_date=d["earliest_date"],
        latest_date=d["latest_date"],
        duration_min=d["duration_min"],
        audience=d.get("audience"),
        priority=d["priority"],
        status=d["status"],
        caravan_id=str(d["caravan_id"]) if d.get("caravan_id") else None,
        date=d.get("date"),
        activity_id=str(d["activity_id"]) if d.get("activity_id") else None,
        created_at=d["created_at"],
        reason=d.get("reason"),
        withdrawn_at=d.get("withdrawn_at"),
        stay=StayOut(**{f: d[f] for f in _STAY_FIELDS}) if is_stay(d) else None,
    )


_STAY_FIELDS = tuple(StayOut.__struct_fields__)
