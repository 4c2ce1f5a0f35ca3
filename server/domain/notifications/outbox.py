"""The outbox: reminders queued for a time, each once (its dedupe key), each with the latest
moment it still makes sense (`stale_after`; none: always), and the outbox as staff see it.
Owns `reminders`."""

from __future__ import annotations

from datetime import datetime

import msgspec
from bson import ObjectId
from pymongo.errors import BulkWriteError

from server.db import aggregate
from server.domain import identity
from server.domain.errors import NotFound
from server.domain.ids import parse_id
from server.domain.notifications.subscriptions import PAGES, template_id

DUPLICATE_KEY = 11000


class Due(msgspec.Struct, frozen=True):
    key: str
    data: dict
    due_at: datetime
    dedupe: str
    stale_after: datetime | None = None  # past it, dispatch drops it as `stale`


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
            "template_id": template_id(ctx, due.key),
            "page": PAGES[due.key].format(activity_id=activity_id or ""),
            "data": due.data,
            "activity_id": activity_id,
            "due_at": max(due.due_at, now),
            "stale_after": due.stale_after,
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
    result = await ctx.db["reminders"].update_one(
        {"_id": parse_id(reminder_id, "reminder_id"), "state": "dead"},
        {"$set": {"state": "pending", "due_at": ctx.clock.now(), "attempts": 0}},
    )
    if not result.matched_count:
        raise NotFound("没有该失败提醒", field="reminder_id")
