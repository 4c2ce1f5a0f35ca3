"""The subscribe-message templates, and how many messages each user accepted of each: one
accept, one message. Owns `subscriptions`."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

import msgspec
from bson import ObjectId
from pymongo import UpdateOne

from server.db import in_transaction
from server.domain.errors import InvalidRequest

TEMPLATE_TITLES = {
    "activity_reminder": "活动开始提醒",
    "waitlist_promoted": "候补成功通知",
    "activity_changed": "活动变更通知",
    "hours_pending": "服务时长待确认提醒",
    "visit_scheduled": "科普大篷车到访通知",
    "visit_declined": "走访申请未通过通知",
    "dispute_resolved": "时长异议处理结果通知",
    "dispute_overdue": "时长异议待处理提醒",
    "expert_visit": "专家派遣通知",
}
PAGES = {
    "activity_reminder": "pages/activity/detail?id={activity_id}",
    "waitlist_promoted": "pages/activity/detail?id={activity_id}",
    "activity_changed": "pages/activity/detail?id={activity_id}",
    "hours_pending": "pages/hours/confirm",
    "visit_scheduled": "pages/caravan/visit?id={activity_id}",
    "visit_declined": "pages/caravan/requests",
    "dispute_resolved": "pages/hours/index",
    "dispute_overdue": "pages/hours/disputes",
    "expert_visit": "pages/activity/detail?id={activity_id}",
}
IN_CHUNK = 100  # keys per $in list (see in_chunks)
QUOTA_ATTEMPTS = 10
"""Rounds of a batch's quota transaction: each conflict means another batch took quotas of
the same users, so a few dispatchers settle in a few rounds; more is the database failing."""


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


def templates(ctx) -> TemplateList:
    return TemplateList(
        items=[
            Template(key=k, template_id=template_id(ctx, k), title=t)
            for k, t in TEMPLATE_TITLES.items()
        ]
    )


def template_id(ctx, key: str) -> str:
    return getattr(ctx.settings, f"template_{key}")


def in_chunks(keys: list) -> list[list]:
    """SecantusDB checks $in against each document in time linear in the list: lists of a
    hundred keep a batch's claim and quota reads linear in the batch's size."""
    return [keys[i : i + IN_CHUNK] for i in range(0, len(keys), IN_CHUNK)]


async def accept(ctx, user_id: ObjectId, template_ids: list[str]) -> QuotaList:
    """What wx.requestSubscribeMessage returned as accepted: one more message each."""
    known = {template_id(ctx, k) for k in TEMPLATE_TITLES}
    for i, accepted in enumerate(template_ids):
        if accepted not in known:
            raise InvalidRequest(f"未知的模板 {accepted}", field=f"accepted[{i}]")
    for accepted in template_ids:
        await ctx.db["subscriptions"].update_one(
            {"_id": quota_key(user_id, accepted)},
            {
                "$inc": {"remaining": 1},
                "$set": {"updated_at": ctx.clock.now()},
                "$setOnInsert": {"user_id": user_id, "template_id": accepted},
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


async def take_quotas(ctx, reminders: list[dict]) -> set[ObjectId]:
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

    async def take(session) -> dict[str, list[ObjectId]]:
        left: dict[str, int] = {}
        for keys in in_chunks(list(wanted)):
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
        return given

    given = await in_transaction(ctx.client, take, attempts=QUOTA_ATTEMPTS)
    return {reminder_id for ids in given.values() for reminder_id in ids}


async def give_back_quota(ctx, user_id: ObjectId, template_id: str) -> None:
    await ctx.db["subscriptions"].update_one(
        {"_id": quota_key(user_id, template_id)}, {"$inc": {"remaining": 1}}
    )
