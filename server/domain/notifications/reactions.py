"""The reactions to domain events: each writes the reminders its event calls for, the message
data they carry, and the latest moment each still makes sense (`stale_after`): a reminder of an
activity, its start; news of a change, the activity's end."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from bson import ObjectId

from server.clock import SHANGHAI
from server.domain import access, activities, events, hours, sites
from server.domain.notifications.outbox import Due, cancel_pending, schedule, schedule_many


def _thing(text: str) -> dict:
    return {"value": text[:20]}  # WeChat's `thing` values hold at most 20 characters


def _time(when: datetime) -> dict:
    return {"value": when.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")}


async def _activity_data(ctx, activity_id: ObjectId, note: str) -> tuple[dict, dict]:
    doc = await activities.get_doc(ctx, activity_id)
    data = {
        "thing1": _thing(doc["title"]),
        "time2": _time(doc["starts_at"]),
        "thing3": _thing(doc.get("address") or note),
    }
    return data, doc


async def on_confirmed(ctx, kind: str, *, activity_id, user_id, **known) -> None:
    if "starts_at" in known:  # the event carries what the message needs
        starts_at, tags = known["starts_at"], known.get("tags", [])
        data = {
            "thing1": _thing(known["title"]),
            "time2": _time(starts_at),
            "thing3": _thing(known.get("address") or "请准时到达"),
        }
    else:
        data, doc = await _activity_data(ctx, activity_id, "请准时到达")
        starts_at, tags = doc["starts_at"], doc.get("tags", [])
    if kind == events.WAITLIST_PROMOTED:
        await schedule(
            ctx, user_id=user_id, key="waitlist_promoted", data=data, due_at=ctx.clock.now(),
            dedupe=f"promoted:{activity_id}:{user_id}:{uuid.uuid4().hex}", activity_id=activity_id,
            stale_after=starts_at,
        )  # fmt: skip
    dues = [(lead, starts_at - timedelta(hours=lead)) for lead in ctx.settings.reminder_leads_h]
    if activities.CARAVAN_TAG in tags:
        # Caravan crews get their day's route the evening before (18:00, Asia/Shanghai).
        local = starts_at.astimezone(SHANGHAI)
        evening = (local - timedelta(days=1)).replace(hour=18, minute=0, second=0, microsecond=0)
        dues.append(("eve", evening))
    reminders = [
        Due("activity_reminder", data, due, f"reminder:{activity_id}:{user_id}:{lead}", starts_at)
        for lead, due in dues
        if due > ctx.clock.now()
    ]
    await schedule_many(ctx, user_id, reminders, activity_id=activity_id)


async def on_left(ctx, kind: str, *, activity_id, user_id, **_) -> None:
    await cancel_pending(ctx, activity_id=activity_id, user_id=user_id)
    # A later sign-up again writes its reminders afresh.
    await ctx.db["reminders"].delete_many(
        {"activity_id": activity_id, "user_id": user_id, "state": "cancelled"}
    )


async def on_activity_cancelled(
    ctx, kind: str, *, activity_id, user_ids, reason: str | None = None, **_
) -> None:
    """Those signed up are told, with the organiser's reason (as far as WeChat's 20 characters
    hold it; the activity's page has it whole)."""
    await cancel_pending(ctx, activity_id=activity_id)
    data, doc = await _activity_data(ctx, activity_id, "活动已取消")
    data["thing3"] = _thing(f"已取消：{reason}" if reason else "活动已取消")
    for user_id in user_ids:
        await schedule(
            ctx, user_id=user_id, key="activity_changed", data=data, due_at=ctx.clock.now(),
            dedupe=f"cancelled:{activity_id}:{user_id}", activity_id=activity_id,
            stale_after=doc["ends_at"],
        )  # fmt: skip


async def on_activity_changed(ctx, kind: str, *, activity_id, changed, user_ids, **_) -> None:
    """A published activity's time, place or capacity changed: tell those signed up, once
    per change."""
    data, doc = await _activity_data(ctx, activity_id, "活动信息有变更")
    if "capacity" in changed:
        data["thing3"] = _thing(f"名额调整为{changed['capacity']}人")
    change = uuid.uuid4().hex
    for user_id in user_ids:
        await schedule(
            ctx, user_id=user_id, key="activity_changed", data=data, due_at=ctx.clock.now(),
            dedupe=f"changed:{activity_id}:{user_id}:{change}", activity_id=activity_id,
            stale_after=doc["ends_at"],
        )  # fmt: skip


async def remind_pending_hours(ctx) -> int:
    """Site admins whose site has hours waiting longer than allowed: one reminder a day, which
    the next day's replaces."""
    now = ctx.clock.now()
    cutoff = now - timedelta(hours=ctx.settings.hours_pending_after_h)
    day = now.astimezone(SHANGHAI).strftime("%Y-%m-%d")
    written = 0
    for site_id, waiting in await hours.pending_by_site(ctx, cutoff):
        site = await sites.get_site_doc(ctx, site_id)
        data = {"thing1": _thing(site["name"]), "number2": {"value": str(waiting)},
                "time3": _time(now)}  # fmt: skip
        for admin in await access.site_admins(ctx, site_id):
            written += await schedule(
                ctx, user_id=admin, key="hours_pending", data=data, due_at=now,
                dedupe=f"hours_pending:{site_id}:{admin}:{day}",
                stale_after=now + timedelta(days=1),
            )  # fmt: skip
    return written


async def on_visit_scheduled(ctx, kind: str, *, site_id, activity_id, **_) -> None:
    """A caravan is coming: tell the site's admins at once."""
    site = await sites.get_site_doc(ctx, site_id)
    data, doc = await _activity_data(ctx, activity_id, "科普大篷车到访")
    data["thing3"] = _thing(site["name"])
    for admin in await access.site_admins(ctx, site_id):
        await schedule(
            ctx, user_id=admin, key="visit_scheduled", data=data, due_at=ctx.clock.now(),
            dedupe=f"visit:{activity_id}:{admin}", activity_id=activity_id,
            stale_after=doc["starts_at"],
        )  # fmt: skip


async def on_visit_declined(ctx, kind: str, *, request_id, site_id, reason, **_) -> None:
    """A visit request was turned down: tell the site's admins why, at once."""
    site = await sites.get_site_doc(ctx, site_id)
    now = ctx.clock.now()
    data = {"thing1": _thing(site["name"]), "time2": _time(now), "thing3": _thing(reason)}
    for admin in await access.site_admins(ctx, site_id):
        await schedule(
            ctx, user_id=admin, key="visit_declined", data=data, due_at=now,
            dedupe=f"visit_declined:{request_id}:{admin}", stale_after=now + timedelta(days=7),
        )  # fmt: skip


async def on_dispute(ctx, kind: str, *, dispute_id, activity_id=None, **known) -> None:
    """A dispute decided (to its volunteer: the outcome and why) or left unanswered too long
    (to the organiser: the activity's creator, else those who confirm hours where it lies)."""
    title = (await activities.titles(ctx, [activity_id])).get(activity_id) if activity_id else None
    now = ctx.clock.now()
    if kind == events.HOURS_DISPUTE_RESOLVED:
        data = {"thing1": _thing(title or "服务时长"),
                "phrase2": {"value": "已采纳" if known["outcome"] == "upheld" else "未采纳"},
                "thing3": _thing(known["reason"])}  # fmt: skip
        await schedule(
            ctx, user_id=known["user_id"], key="dispute_resolved", data=data, due_at=now,
            dedupe=f"dispute_resolved:{dispute_id}", stale_after=now + timedelta(days=30),
        )  # fmt: skip
        return
    doc = await activities.get_doc(ctx, activity_id) if activity_id else {}
    organisers = [doc["created_by"]] if doc.get("created_by") else []
    if not organisers:
        holding = access.roles_holding("hours.confirm")
        organisers = sorted({g["user_id"] for g in await access.grants_in(ctx, known["org_id"])
                             if g["role"] in holding and not g.get("site_id")})  # fmt: skip
    data = {"thing1": _thing(title or "服务时长"), "time2": _time(known["raised_at"]),
            "thing3": _thing("志愿者异议待处理")}  # fmt: skip
    for organiser in organisers:
        await schedule(
            ctx, user_id=organiser, key="dispute_overdue", data=data, due_at=now,
            dedupe=f"dispute_overdue:{dispute_id}:{organiser}",
            stale_after=now + timedelta(days=7),
        )  # fmt: skip


async def tell_expert_of_visit(ctx, *, user_id, request_id, activity_id, place: str) -> bool:
    """An expert was sent to a county's request (its activity published): tell them at once,
    once per request."""
    data, doc = await _activity_data(ctx, activity_id, place)
    data["thing3"] = _thing(place)
    return await schedule(
        ctx, user_id=user_id, key="expert_visit", data=data, due_at=ctx.clock.now(),
        dedupe=f"expert_visit:{request_id}:{user_id}", activity_id=activity_id,
        stale_after=doc["starts_at"],
    )  # fmt: skip


def register(bus: events.EventBus) -> None:
    """Hook the outbox to the domain events (called once at start)."""
    bus.subscribe(events.SIGNUP_CONFIRMED, on_confirmed)
    bus.subscribe(events.WAITLIST_PROMOTED, on_confirmed)
    bus.subscribe(events.SIGNUP_CANCELLED, on_left)
    bus.subscribe(events.MOVED_TO_WAITLIST, on_left)
    bus.subscribe(events.ACTIVITY_CANCELLED, on_activity_cancelled)
    bus.subscribe(events.ACTIVITY_CHANGED, on_activity_changed)
    bus.subscribe(events.VISIT_SCHEDULED, on_visit_scheduled)
    bus.subscribe(events.VISIT_REQUEST_DECLINED, on_visit_declined)
    bus.subscribe(events.HOURS_DISPUTE_RESOLVED, on_dispute)
    bus.subscribe(events.HOURS_DISPUTE_OVERDUE, on_dispute)
