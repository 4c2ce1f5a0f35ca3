"""The seat counters on an activity: confirmed, waitlisted, pending, and its capacity.

Writes only these fields of the `activities` collection (server/domain/activities.py owns the
rest). They change only through the atomic operations here, each one conditional update
(cancelling an activity zeroes them); sign-ups (server/domain/signups.py) call them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from bson import ObjectId
from pymongo import ReturnDocument

from server.domain.activities import get_doc
from server.domain.errors import Conflict

_WINDOW = {
    "title": 1,
    "starts_at": 1,
    "ends_at": 1,
    "org_id": 1,
    "capacity": 1,
    "waitlist": 1,
    "address": 1,
    "tags": 1,
}


def _open_for_signup(now: datetime) -> dict:
    return {"status": "published", "signup_deadline": {"$gt": now}, "starts_at": {"$gt": now}}


async def take_seat(ctx, activity_id: ObjectId, *, by: Literal["signup", "approval", "promotion"]):
    """One confirmed seat if one is free; None otherwise.

    A sign-up or an approval takes a seat only while nobody waits (free seats go to the waitlist
    first, through a promotion) and only while sign-up is open.
    """
    query: dict = {"_id": activity_id, "$expr": {"$lt": ["$confirmed_count", "$capacity"]}}
    if by == "promotion":
        query["status"] = "published"
    else:
        query.update(_open_for_signup(ctx.clock.now()), waitlist_count=0)
        if by == "signup":
            query["approval"] = "auto"
    return await ctx.db["activities"].find_one_and_update(
        query, {"$inc": {"confirmed_count": 1}}, projection=_WINDOW
    )


async def join_waitlist(ctx, activity_id: ObjectId, *, approval: str | None) -> dict | None:
    """A place at the back of the waitlist; the returned `waitlist_seq` orders it, and the
    counters after the change say whether a seat is free to promote into."""
    query = {"_id": activity_id, "waitlist": True, **_open_for_signup(ctx.clock.now())}
    if approval:
        query["approval"] = approval
    return await ctx.db["activities"].find_one_and_update(
        query,
        {"$inc": {"waitlist_count": 1, "waitlist_seq": 1}},
        projection={**_WINDOW, "waitlist_seq": 1, "waitlist_count": 1, "confirmed_count": 1},
        return_document=ReturnDocument.AFTER,
    )


async def join_pending(ctx, activity_id: ObjectId) -> dict | None:
    query = {"_id": activity_id, "approval": "manual", **_open_for_signup(ctx.clock.now())}
    return await ctx.db["activities"].find_one_and_update(
        query, {"$inc": {"pending_count": 1}}, projection=_WINDOW
    )


async def front_of_waitlist(ctx, activity_id: ObjectId, seats: int) -> int:
    """Counter value for the head of the waitlist (people moved off confirmed go first)."""
    doc = await ctx.db["activities"].find_one_and_update(
        {"_id": activity_id},
        {"$inc": {"waitlist_front": -seats}},
        projection={"waitlist_front": 1},
        return_document=ReturnDocument.AFTER,
    )
    return doc["waitlist_front"]


async def adjust_counts(ctx, activity_id: ObjectId, **deltas: int) -> None:
    changes = {f"{name}_count": delta for name, delta in deltas.items() if delta}
    if changes:
        await ctx.db["activities"].update_one({"_id": activity_id}, {"$inc": changes})


async def set_capacity(ctx, activity_id: ObjectId, capacity: int, *, min_confirmed: bool) -> dict:
    """New capacity; with `min_confirmed`, refused when fewer seats than confirmed people.
    Returns the activity as it was before (its counters are the same after)."""
    query: dict = {"_id": activity_id, "status": {"$in": ["draft", "published"]}}
    if min_confirmed:
        query["confirmed_count"] = {"$lte": capacity}
    before = await ctx.db["activities"].find_one_and_update(
        query, {"$set": {"capacity": capacity}}, return_document=ReturnDocument.BEFORE
    )
    if before is None:
        current = await get_doc(ctx, activity_id)
        if current["status"] not in ("draft", "published"):
            raise Conflict(f"{current['status']} 状态的活动不能修改名额", code="invalid_state")
        raise Conflict(
            f"已有 {current['confirmed_count']} 人确认报名，名额不能少于此数",
            code="capacity_below_confirmed",
            field="capacity",
        )
    return before


async def set_counts(ctx, activity_id: ObjectId, counts: dict[str, int]) -> None:
    await ctx.db["activities"].update_one(
        {"_id": activity_id}, {"$set": {f"{name}_count": n for name, n in counts.items()}}
    )
