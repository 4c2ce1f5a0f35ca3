"""Reminders through WeChat subscribe messages: exactly the right message, once.

Owns `subscriptions` (how many messages each user accepted per template: one accept, one
message) and `reminders` (the outbox). Domain events write reminders; the dispatcher claims
due ones a batch at a time, each with one atomic update, takes their quotas in one transaction,
sends them through the WeChat adapter and records the outcomes. A claim carries a lease: if its
process dies mid-send, the reminder is claimed again once the lease runs out, so none is lost.
The database is what limits dispatch, so its reads and writes go a batch at a time.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Annotated

import msgspec
import structlog
from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, PyMongoError

from server.clock import SHANGHAI
from server.db import aggregate, transaction
from server.domain import activities, events, hours, identity, sites
from server.domain.errors import InvalidRequest, NotFound
from server.domain.ids import parse_id
from server.wechat.client import WeChatError

log = structlog.get_logger(__name__)

TEMPLATE_TITLES = {
    "activity_reminder": "活动开始提醒",
    "waitlist_promoted": "候补成功通知",
    "activity_changed": "活动变更通知",
    "hours_pending": "服务时长待确认提醒",
    "visit_scheduled": "科普大篷车到访通知",
}
PAGES = {
    "activity_reminder": "pages/activity/detail?id={activity_id}",
    "waitlist_promoted": "pages/activity/detail?id={activity_id}",
    "activity_changed": "pages/activity/detail?id={activity_id}",
    "hours_pending": "pages/hours/confirm",
    "visit_scheduled": "pages/caravan/visit?id={activity_id}",
}
DUPLICATE_KEY = 11000
REFUSED = 43101  # the user refused, or has no quota left at WeChat: never retried
IN_CHUNK = 100  # keys per $in list (see _in_chunks)


class Template(msgspec.Struct):
    key: str
    template_id: str
    title: str


class TemplateList(msgspec.Struct):
    items: list[Template]


class Accepted(msgspec.Struct, forbid_unknown_fields=True):
    accepted: Annotated[list[str], msgspec.Meta(min_length=1, max_length=20)]


class Quota(msgspec.Struct):
    template_id: str
    remaining: int


class QuotaList(msgspec.Struct):
    items: list[Quota]


class DeadReminder(msgspec.Struct):
    id: str
    template_key: str
    user_id: str
    attempts: int
    last_error: str | None
    due_at: datetime


class OutboxSummary(msgspec.Struct):
    counts: dict[str, int]
    dead: list[DeadReminder]


def templates(ctx) -> TemplateList:
    return TemplateList(
        items=[
            Template(key=k, template_id=_template_id(ctx, k), title=t)
            for k, t in TEMPLATE_TITLES.items()
        ]
    )


def _template_id(ctx, key: str) -> str:
    return getattr(ctx.settings, f"template_{key}")


def _in_chunks(keys: list) -> list[list]:
    """SecantusDB checks $in against each document in time linear in the list: lists of a
    hundred keep a batch's claim and quota reads linear in the batch's size."""
    return [keys[i : i + IN_CHUNK] for i in range(0, len(keys), IN_CHUNK)]


# -- subscriptions ----------------------------------------------------------------------------


async def accept(ctx, user_id: ObjectId, template_ids: list[str]) -> QuotaList:
    """What wx.requestSubscribeMessage returned as accepted: one more message each."""
    known = {_template_id(ctx, k) for k in TEMPLATE_TITLES}
    for i, template_id in enumerate(template_ids):
        if template_id not in known:
            raise InvalidRequest(f"未知的模板 {template_id}", field=f"accepted[{i}]")
    for template_id in template_ids:
        await ctx.db["subscriptions"].update_one(
            {"_id": quota_key(user_id, template_id)},
            {
                "$inc": {"remaining": 1},
                "$set": {"updated_at": ctx.clock.now()},
                "$setOnInsert": {"user_id": user_id, "template_id": template_id},
            },
            upsert=True,
        )
    return await quotas(ctx, user_id)


async def quotas(ctx, user_id: ObjectId) -> QuotaList:
    docs = await ctx.db["subscriptions"].find({"user_id": user_id}).to_list(None)
    return QuotaList(
        items=[Quota(template_id=d["template_id"], remaining=d["remaining"]) for d in docs]
    )


def quota_key(user_id: ObjectId, template_id: str) -> str:
    # The quota is found by primary key: the hottest lookup of a dispatch.
    return f"{user_id}:{template_id}"


async def _take_quotas(ctx, reminders: list[dict]) -> set[ObjectId]:
    """Give each reminder one message of its user's quota while the quota lasts; returns the
    ids of the reminders given one.

    One transaction for a batch: read its quotas, decide, write the decrements. (A bulk write
    tells how many it changed, not which, so the decision comes from the read.) A user's
    reminders of one template in a batch take what the quota holds, first come first served;
    the rest get none. A quota changed meanwhile is a write conflict: read and decide again.
    """
    wanted: dict[str, list[ObjectId]] = defaultdict(list)
    for reminder in reminders:
        wanted[quota_key(reminder["user_id"], reminder["template_id"])].append(reminder["_id"])
    if not wanted:
        return set()
    while True:
        try:
            async with transaction(ctx.client) as session:
                left: dict[str, int] = {}
                for keys in _in_chunks(list(wanted)):
                    found = ctx.db["subscriptions"].find(
                        {"_id": {"$in": keys}}, {"remaining": 1}, session=session
                    )
                    left.update({quota["_id"]: quota["remaining"] async for quota in found})
                given = {key: ids[: max(0, left.get(key, 0))] for key, ids in wanted.items()}
                takes = [
                    UpdateOne({"_id": key}, {"$inc": {"remaining": -len(ids)}})
                    for key, ids in given.items()
                    if ids
                ]
                if takes:
                    await ctx.db["subscriptions"].bulk_write(takes, session=session)
        except PyMongoError as exc:
            if exc.has_error_label("TransientTransactionError"):
                continue
            raise
        return {reminder_id for ids in given.values() for reminder_id in ids}


async def _give_back_quota(ctx, user_id: ObjectId, template_id: str) -> None:
    await ctx.db["subscriptions"].update_one(
        {"_id": quota_key(user_id, template_id)}, {"$inc": {"remaining": 1}}
    )


# -- the outbox -------------------------------------------------------------------------------


class Due(msgspec.Struct, frozen=True):
    key: str
    data: dict
    due_at: datetime
    dedupe: str


async def schedule(ctx, *, user_id: ObjectId, activity_id: ObjectId | None = None, **due) -> bool:
    """Queue one reminder; the dedupe key makes writing it again a no-op."""
    return await schedule_many(ctx, user_id, [Due(**due)], activity_id=activity_id) == 1


async def schedule_many(
    ctx, user_id: ObjectId, dues: list[Due], *, activity_id: ObjectId | None = None
) -> int:
    """Queue a user's reminders in one write; returns how many were new."""
    if not dues:
        return 0
    now = ctx.clock.now()
    openid = await identity.openid_of(ctx, user_id)
    documents = [
        {
            "user_id": user_id,
            "openid": openid,
            "template_key": due.key,
            "template_id": _template_id(ctx, due.key),
            "page": PAGES[due.key].format(activity_id=activity_id or ""),
            "data": due.data,
            "activity_id": activity_id,
            "due_at": max(due.due_at, now),
            "state": "pending",
            "attempts": 0,
            "last_error": None,
            "dedupe": due.dedupe,
            "created_at": now,
        }
        for due in dues
    ]
    try:
        result = await ctx.db["reminders"].insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        if any(e["code"] != DUPLICATE_KEY for e in exc.details["writeErrors"]):
            raise
        return exc.details["nInserted"]
    return len(result.inserted_ids)


async def cancel_pending(ctx, *, activity_id: ObjectId, user_id: ObjectId | None = None) -> int:
    query: dict = {"activity_id": activity_id, "state": "pending"}
    if user_id is not None:
        query["user_id"] = user_id
    result = await ctx.db["reminders"].update_many(
        query, {"$set": {"state": "cancelled", "finished_at": ctx.clock.now()}}
    )
    return result.modified_count


def _thing(text: str) -> dict:
    return {"value": text[:20]}  # WeChat's `thing` values hold at most 20 characters


def _time(when: datetime) -> dict:
    return {"value": when.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")}


async def _activity_data(ctx, activity_id: ObjectId, note: str) -> tuple[dict, datetime, list]:
    doc = await activities.get_doc(ctx, activity_id)
    data = {
        "thing1": _thing(doc["title"]),
        "time2": _time(doc["starts_at"]),
        "thing3": _thing(doc.get("address") or note),
    }
    return data, doc["starts_at"], doc.get("tags", [])


# -- reactions to domain events ---------------------------------------------------------------


async def on_confirmed(ctx, kind: str, *, activity_id, user_id, **known) -> None:
    if "starts_at" in known:  # the event carries what the message needs
        starts_at, tags = known["starts_at"], known.get("tags", [])
        data = {
            "thing1": _thing(known["title"]),
            "time2": _time(starts_at),
            "thing3": _thing(known.get("address") or "请准时到达"),
        }
    else:
        data, starts_at, tags = await _activity_data(ctx, activity_id, "请准时到达")
    if kind == events.WAITLIST_PROMOTED:
        await schedule(
            ctx, user_id=user_id, key="waitlist_promoted", data=data, due_at=ctx.clock.now(),
            dedupe=f"promoted:{activity_id}:{user_id}:{uuid.uuid4().hex}", activity_id=activity_id,
        )  # fmt: skip
    dues = [(lead, starts_at - timedelta(hours=lead)) for lead in ctx.settings.reminder_leads_h]
    if activities.CARAVAN_TAG in tags:
        # Caravan crews get their day's route the evening before (18:00, Asia/Shanghai).
        local = starts_at.astimezone(SHANGHAI)
        evening = (local - timedelta(days=1)).replace(hour=18, minute=0, second=0, microsecond=0)
        dues.append(("eve", evening))
    reminders = [
        Due("activity_reminder", data, due, f"reminder:{activity_id}:{user_id}:{lead}")
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


async def on_activity_cancelled(ctx, kind: str, *, activity_id, user_ids, **_) -> None:
    await cancel_pending(ctx, activity_id=activity_id)
    data, _, _ = await _activity_data(ctx, activity_id, "活动已取消")
    data["thing3"] = _thing("活动已取消")
    for user_id in user_ids:
        await schedule(
            ctx, user_id=user_id, key="activity_changed", data=data, due_at=ctx.clock.now(),
            dedupe=f"cancelled:{activity_id}:{user_id}", activity_id=activity_id,
        )  # fmt: skip


async def remind_pending_hours(ctx) -> int:
    """Site admins whose site has hours waiting longer than allowed: one reminder a day."""
    now = ctx.clock.now()
    cutoff = now - timedelta(hours=ctx.settings.hours_pending_after_h)
    day = now.astimezone(SHANGHAI).strftime("%Y-%m-%d")
    written = 0
    for site_id, waiting in await hours.pending_by_site(ctx, cutoff):
        site = await sites.get_site_doc(ctx, site_id)
        data = {"thing1": _thing(site["name"]), "number2": {"value": str(waiting)},
                "time3": _time(now)}  # fmt: skip
        for admin in site.get("admin_ids", []):
            written += await schedule(
                ctx, user_id=admin, key="hours_pending", data=data, due_at=now,
                dedupe=f"hours_pending:{site_id}:{admin}:{day}",
            )  # fmt: skip
    return written


async def on_visit_scheduled(ctx, kind: str, *, site_id, activity_id, **_) -> None:
    """A caravan is coming: tell the site's admins at once."""
    site = await sites.get_site_doc(ctx, site_id)
    data, _, _ = await _activity_data(ctx, activity_id, "科普大篷车到访")
    data["thing3"] = _thing(site["name"])
    for admin in site.get("admin_ids", []):
        await schedule(
            ctx, user_id=admin, key="visit_scheduled", data=data, due_at=ctx.clock.now(),
            dedupe=f"visit:{activity_id}:{admin}", activity_id=activity_id,
        )  # fmt: skip


def register() -> None:
    """Hook the outbox to the domain events (called once at start)."""
    events.subscribe(events.SIGNUP_CONFIRMED, on_confirmed)
    events.subscribe(events.WAITLIST_PROMOTED, on_confirmed)
    events.subscribe(events.SIGNUP_CANCELLED, on_left)
    events.subscribe(events.MOVED_TO_WAITLIST, on_left)
    events.subscribe(events.ACTIVITY_CANCELLED, on_activity_cancelled)
    events.subscribe(events.VISIT_SCHEDULED, on_visit_scheduled)


# -- dispatch ---------------------------------------------------------------------------------


async def _claim(ctx, limit: int, claimer: str) -> list[dict]:
    """Claim up to `limit` due reminders: those whose claim ran out, then pending ones.

    Two plain queries rather than one $or, so each runs on its own index. The claim also
    marks the quota as taken (the intent goes first: a dispatcher that dies after taking the
    quota leaves the mark); `quota_taken` in what this returns is the value from before.
    """
    now = ctx.clock.now()
    claim = f"{claimer}:{uuid.uuid4().hex}"
    before: dict[ObjectId, bool] = {}
    for due in (
        {"state": "sending", "lease_until": {"$lt": now}},
        {"state": "pending", "due_at": {"$lte": now}},
    ):
        if len(before) >= limit:
            break
        found = await ctx.db["reminders"].find(due, {"quota_taken": 1}).to_list(limit - len(before))
        for ids in _in_chunks([d["_id"] for d in found]):
            await ctx.db["reminders"].update_many(
                {"_id": {"$in": ids}, **due},
                {
                    "$set": {
                        "state": "sending",
                        "claim": claim,
                        "quota_taken": True,
                        "lease_until": now + timedelta(seconds=ctx.settings.reminder_claim_s),
                    },
                    "$inc": {"attempts": 1},
                },
            )
        before.update((d["_id"], d.get("quota_taken", False)) for d in found)
    if not before:
        return []
    mine = await ctx.db["reminders"].find({"claim": claim}).to_list(None)
    for reminder in mine:
        reminder["quota_taken"] = before[reminder["_id"]]
    return mine


def _backoff_s(attempts: int) -> float:
    return min(3600.0, 5.0 * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)


async def _deliver(ctx, reminder: dict, has_quota: bool) -> UpdateOne | None:
    """Send one claimed reminder; returns the update recording why it was not sent, or None
    once it is (the batch records those together)."""
    now = ctx.clock.now()
    mine = {"_id": reminder["_id"], "claim": reminder["claim"]}
    if not has_quota:
        return UpdateOne(mine, {"$set": {"state": "skipped", "last_error": "no_quota",
                                         "finished_at": now}})  # fmt: skip
    try:
        await ctx.wechat.send_subscribe_message(
            reminder["openid"], reminder["template_id"], reminder["data"], page=reminder["page"]
        )
    except WeChatError as exc:
        error = f"{exc.errcode} {exc.errmsg}"
        if exc.errcode == REFUSED:
            return UpdateOne(mine, {"$set": {"state": "skipped", "last_error": error,
                                             "finished_at": now}})  # fmt: skip
        await _give_back_quota(ctx, reminder["user_id"], reminder["template_id"])
        if exc.transient and reminder["attempts"] < ctx.settings.reminder_max_attempts:
            retry_at = now + timedelta(seconds=_backoff_s(reminder["attempts"]))
            retry = {"state": "pending", "due_at": retry_at, "last_error": error}
            return UpdateOne(mine, {"$set": {**retry, "quota_taken": False}})
        log.warning("reminder_dead", reminder_id=str(reminder["_id"]), errcode=exc.errcode)
        return UpdateOne(mine, {"$set": {"state": "dead", "last_error": error,
                                         "finished_at": now, "quota_taken": False}})  # fmt: skip
    return None


async def _record(ctx, claim: str, unsent: list[UpdateOne]) -> None:
    """Write a batch's outcomes: the unsent ones one by one, then in one update all that is
    left of the claim, which was sent."""
    if unsent:
        await ctx.db["reminders"].bulk_write(unsent, ordered=False)
    await ctx.db["reminders"].update_many(
        {"claim": claim, "state": "sending"},
        {"$set": {"state": "sent", "sent_at": ctx.clock.now(), "last_error": None}},
    )


async def dispatch_due(ctx, claimer: str = "dispatcher") -> int:
    """Deliver everything due now, batch by batch; returns how many were handled."""
    handled = 0
    gate = asyncio.Semaphore(ctx.settings.dispatch_concurrency)

    async def deliver(reminder: dict, has_quota: bool) -> UpdateOne | None:
        async with gate:
            return await _deliver(ctx, reminder, has_quota)

    while batch := await _claim(ctx, ctx.settings.dispatch_batch, claimer):
        # A reminder claimed again after its dispatcher died has its quota taken already.
        given = await _take_quotas(ctx, [r for r in batch if not r["quota_taken"]])
        outcomes = await asyncio.gather(
            *[deliver(r, r["quota_taken"] or r["_id"] in given) for r in batch]
        )
        await _record(ctx, batch[0]["claim"], [o for o in outcomes if o is not None])
        handled += len(batch)
    return handled


# -- the outbox as staff see it ---------------------------------------------------------------


async def summary(ctx, limit: int = 50) -> OutboxSummary:
    rows = await aggregate(ctx.db["reminders"], [{"$group": {"_id": "$state", "n": {"$sum": 1}}}])
    dead = await ctx.db["reminders"].find({"state": "dead"}).sort([("due_at", -1)]).to_list(limit)
    return OutboxSummary(
        counts={row["_id"]: row["n"] for row in rows},
        dead=[
            DeadReminder(
                id=str(d["_id"]),
                template_key=d["template_key"],
                user_id=str(d["user_id"]),
                attempts=d["attempts"],
                last_error=d.get("last_error"),
                due_at=d["due_at"],
            )
            for d in dead
        ],
    )


async def retry(ctx, reminder_id) -> None:
    result = await ctx.db["reminders"].find_one_and_update(
        {"_id": parse_id(reminder_id, "reminder_id"), "state": "dead"},
        {"$set": {"state": "pending", "due_at": ctx.clock.now(), "attempts": 0}},
        return_document=ReturnDocument.AFTER,
    )
    if result is None:
        raise NotFound("没有该失败提醒", field="reminder_id")
