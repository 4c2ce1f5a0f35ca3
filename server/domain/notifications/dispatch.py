"""The dispatcher: claims due reminders a batch at a time, takes their quotas, sends them
through the WeChat adapter and records the outcomes. A claim carries a lease, so a reminder
whose dispatcher died mid-send is claimed again once the lease runs out.

Exactly once at WeChat: a send whose outcome is unknown (it timed out, or its dispatcher died
before recording it) is sent again, and since WeChat counts the user's one-time subscriptions
itself, a 43101 on that retry means the first one went through: it counts as sent, once.

A reminder claimed past its `stale_after` (the activity it announces has started) is dropped as
`stale`, counted, and its user keeps the quota: unless an earlier send of it timed out, for that
one may have gone through, and it is settled as above.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import timedelta

import structlog
from bson import ObjectId
from prometheus_client import Counter
from pymongo import UpdateOne

from server.db import Lease
from server.domain.notifications.subscriptions import give_back_quota, in_chunks, take_quotas
from server.wechat.client import WeChatError

log = structlog.get_logger(__name__)

REFUSED = 43101  # the user refused, or has no quota left at WeChat: never retried
STALE = Counter(
    "ikepu_reminders_stale_total", "Reminders dropped at dispatch past their moment", ["template"]
)


async def _claim(ctx, limit: int, claimer: str) -> list[dict]:
    """Claim up to `limit` due reminders: those whose claim ran out, then pending ones.

    Two plain queries rather than one $or, so each runs on its own index. The claim also
    marks the quota as taken (the intent goes first: a dispatcher that dies after taking the
    quota leaves the mark); `quota_taken` in what this returns is the value from before.
    """
    now = ctx.clock.now()
    claim = f"{claimer}:{uuid.uuid4().hex}"
    lease = Lease(ctx.settings.reminder_claim_s, holder_field="claim")
    before: dict[ObjectId, bool] = {}
    abandoned: set[ObjectId] = set()  # claimed before by a dispatcher that never recorded them
    for due in (
        {"state": "sending", lease.until_field: {"$lt": now}},
        {"state": "pending", "due_at": {"$lte": now}},
    ):
        if len(before) >= limit:
            break
        found = await ctx.db["reminders"].find(due, {"quota_taken": 1}).to_list(limit - len(before))
        for ids in in_chunks([d["_id"] for d in found]):
            await ctx.db["reminders"].update_many(
                {"_id": {"$in": ids}, **due},
                {
                    "$set": {"state": "sending", "quota_taken": True, **lease.taken(claim, now)},
                    "$inc": {"attempts": 1},
                },
            )
        before.update((d["_id"], d.get("quota_taken", False)) for d in found)
        if due["state"] == "sending":
            abandoned.update(d["_id"] for d in found)
    if not before:
        return []
    mine = await ctx.db["reminders"].find({"claim": claim}).to_list(None)
    for reminder in mine:
        reminder["quota_taken"] = before[reminder["_id"]]
        reminder["uncertain"] = reminder.get("uncertain", False) or reminder["_id"] in abandoned
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
        if exc.errcode == REFUSED and reminder["uncertain"]:
            log.info("reminder_delivered_before", reminder_id=str(reminder["_id"]))
            return None  # the earlier send used the user's subscription: it went through
        if exc.errcode == REFUSED:
            return UpdateOne(mine, {"$set": {"state": "skipped", "last_error": error,
                                             "finished_at": now}})  # fmt: skip
        if exc.timeout and reminder["attempts"] < ctx.settings.reminder_max_attempts:
            # It may have gone through: send again soon, the quota still taken, and let
            # WeChat's own count tell (see the module docstring).
            retry_at = now + timedelta(seconds=_backoff_s(1))
            return UpdateOne(mine, {"$set": {"state": "pending", "due_at": retry_at,
                                             "last_error": error, "uncertain": True}})  # fmt: skip
        await give_back_quota(ctx, reminder["user_id"], reminder["template_id"])
        if exc.transient and reminder["attempts"] < ctx.settings.reminder_max_attempts:
            retry_at = now + timedelta(seconds=_backoff_s(reminder["attempts"]))
            retry = {"state": "pending", "due_at": retry_at, "last_error": error}
            return UpdateOne(mine, {"$set": {**retry, "quota_taken": False}})
        log.warning("reminder_dead", reminder_id=str(reminder["_id"]), errcode=exc.errcode)
        return UpdateOne(mine, {"$set": {"state": "dead", "last_error": error,
                                         "finished_at": now, "quota_taken": False}})  # fmt: skip
    return None


def _is_stale(reminder: dict, now) -> bool:
    """Past its moment, and no earlier send of it may have gone through. (Only such an uncertain
    one holds a quota when claimed: a stale one is dropped before quotas are taken.)"""
    stale_after = reminder.get("stale_after")
    return stale_after is not None and stale_after < now and not reminder["uncertain"]


def _drop_stale(ctx, reminder: dict) -> UpdateOne:
    STALE.labels(template=reminder["template_key"]).inc()
    log.info("reminder_stale", reminder_id=str(reminder["_id"]), template=reminder["template_key"])
    return UpdateOne(
        {"_id": reminder["_id"], "claim": reminder["claim"]},
        {"$set": {"state": "stale", "finished_at": ctx.clock.now(), "quota_taken": False}},
    )


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
        now = ctx.clock.now()
        dropped = [_drop_stale(ctx, r) for r in batch if _is_stale(r, now)]
        live = [r for r in batch if not _is_stale(r, now)]
        # A reminder claimed again after its dispatcher died has its quota taken already.
        given = await take_quotas(ctx, [r for r in live if not r["quota_taken"]])
        outcomes = await asyncio.gather(
            *[deliver(r, r["quota_taken"] or r["_id"] in given) for r in live]
        )
        await _record(ctx, batch[0]["claim"], dropped + [o for o in outcomes if o is not None])
        handled += len(batch)
    return handled
