"""The seat counters on an activity: confirmed, waitlisted, pending, its capacity, and
`seats_left` (capacity − confirmed), kept beside them so that "a seat is free" is a plain field
condition the embedded server answers from the _id index (a `$expr` comparing two fields, or a
findAndModify, costs time in proportion to the collection there).

Writes only these fields of the `activities` collection (server/domain/activities.py owns the
rest). They change only through the operations here, every one an `update_one` on the _id with
plain conditions (cancelling an activity zeroes the counts): a seat is
`update_one({_id, seats_left > 0, ...}, $inc)`; a change that needs a value first (the next
waitlist number, a new capacity) is a compare-and-set on the values it read, read again and
retried when another writer got there first. Every change also stamps `seats_touched_at`, in
the same update: a crash between a counter and its record can only leave an activity touched
lately out of step, so the repair (signup_repair.repair) looks only at those. Within a process such
changes to one activity take turns (`Turns`), so a burst queues in memory instead of colliding
in the database. Sign-ups (server/domain/signups.py) call them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from bson import ObjectId
from pymongo import UpdateOne

from server.domain.activities import get_doc
from server.domain.errors import Conflict, Unavailable

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
TRIES = 100
"""Attempts of one compare-and-set before the caller is asked to come back later."""
_UNCONTESTED = 2  # misses before the attempts spread out, so they do not retry in lockstep
_PAUSE_S = 0.002
_LONGEST_PAUSE_S = 0.05
_BACKFILL_BATCH = 500


async def pause(attempt: int) -> None:
    """Between attempts of a compare-and-set: none at first, then a short random sleep."""
    if attempt >= _UNCONTESTED:
        await asyncio.sleep(random.uniform(0, min(_LONGEST_PAUSE_S, _PAUSE_S * attempt)))


def too_busy() -> Unavailable:
    return Unavailable("同时操作的人太多，请稍后重试", code="busy")


@dataclass
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    left: dict | None = None  # the values the last holder wrote, the next one's expectation


class Turns:
    """Compare-and-sets from this process, one at a time per key and in arrival order (one
    registry per context, `ctx.seat_turns`).

    On the embedded server every miss of a compare-and-set costs a write, so many contenders
    for one activity would spend the burst colliding; queued here, each finds the values the
    one before it left. Other processes are kept exact by the compare-and-set itself. A key is
    forgotten once nobody holds or waits for it.
    """

    def __init__(self) -> None:
        self._turns: dict[Hashable, _Turn] = {}

    @contextlib.asynccontextmanager
    async def of(self, key: Hashable) -> AsyncIterator[_Turn]:
        turn = self._turns.setdefault(key, _Turn())
        turn.users += 1
        try:
            async with turn.lock:
                yield turn
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[key]


def _touched(ctx) -> dict:
    """The part of a counter update that marks the activity as touched now."""
    return {"$set": {"seats_touched_at": ctx.clock.now()}}


async def touch(ctx, activity_id: ObjectId) -> None:
    """Mark the activity before a change that writes its record first and its counters after
    (a cancellation, a decision), so a crash between the two is still looked at."""
    await ctx.db["activities"].update_one({"_id": activity_id}, _touched(ctx))


def _open_for_signup(now: datetime) -> dict:
    return {"status": "published", "signup_deadline": {"$gt": now}, "starts_at": {"$gt": now}}


def _applied(values: dict, update: dict) -> dict:
    """`values` as `update` ($inc, $set) leaves them."""
    after = dict(values)
    for name, delta in update.get("$inc", {}).items():
        if name in after:
            after[name] += delta
    after.update((k, v) for k, v in update.get("$set", {}).items() if k in after)
    return after


async def _change_as_read(
    ctx,
    activity_id: ObjectId,
    watched: tuple[str, ...],
    change: Callable[[dict], dict | None],
    conditions: dict | None = None,
) -> dict | None:
    """Optimistic concurrency on some fields of an activity: `change(values)` builds the update
    from the `watched` values as read (or None to refuse), and it applies only while they still
    hold those values and the activity meets `conditions` (on other fields); on a miss, read
    again and retry. Callers in this process take turns per activity and fields, each starting
    from the values the one before it wrote.

    Returns the watched values as they were just before the change; None when refused, or
    when the activity is gone or no longer meets `conditions`.
    """
    coll = ctx.db["activities"]
    query = {"_id": activity_id, **(conditions or {})}
    async with ctx.seat_turns.of((activity_id, watched)) as turn:
        seen, fresh = turn.left, False
        for attempt in range(TRIES):
            if seen is None:
                doc = await coll.find_one(query, dict.fromkeys(watched, 1))
                if doc is None:
                    return None
                seen, fresh = {name: doc.get(name) for name in watched}, True
            update = change(seen)
            if update is None:
                if fresh:
                    return None
            elif (await coll.update_one({**query, **seen}, update)).matched_count:
                turn.left = _applied(seen, update)
                return seen
            seen = None  # another writer moved them (or the turn before left stale values)
            await pause(attempt)
    raise too_busy()


async def take_seat(ctx, activity_id: ObjectId, *, by: Literal["signup", "approval", "promotion"]):
    """One confirmed seat if one is free, returning the activity's window; None otherwise.

    A sign-up or an approval takes a seat only while nobody waits (free seats go to the waitlist
    first, through a promotion) and only while sign-up is open.
    """
    query: dict = {"_id": activity_id, "seats_left": {"$gt": 0}}
    if by == "promotion":
        query["status"] = "published"
    else:
        query.update(_open_for_signup(ctx.clock.now()), waitlist_count=0)
        if by == "signup":
            query["approval"] = "auto"
    taken = await ctx.db["activities"].update_one(
        query, {"$inc": {"confirmed_count": 1, "seats_left": -1}, **_touched(ctx)}
    )
    if not taken.matched_count:
        return None
    return await ctx.db["activities"].find_one({"_id": activity_id}, _WINDOW)


async def seats_left(ctx, activity_id: ObjectId) -> int:
    """Free seats now (negative while a lowered capacity leaves people to move off)."""
    doc = await ctx.db["activities"].find_one({"_id": activity_id}, {"seats_left": 1})
    return doc["seats_left"]


async def join_waitlist(ctx, activity_id: ObjectId, *, approval: str | None) -> dict | None:
    """A place at the back of the waitlist, or None when the activity takes no more.

    Returns the window with the counters just after joining: `waitlist_seq` is this place's
    number (it orders the queue) and `waitlist_count` the queue's length with it. Both are
    compared, so the length is exact as of the join even while others leave the queue.
    """
    conditions = {"waitlist": True, **_open_for_signup(ctx.clock.now())}
    if approval:
        conditions["approval"] = approval
    seen = await _change_as_read(
        ctx,
        activity_id,
        ("waitlist_seq", "waitlist_count"),
        lambda _: {"$inc": {"waitlist_seq": 1, "waitlist_count": 1}, **_touched(ctx)},
        conditions,
    )
    if seen is None:
        return None
    window = await ctx.db["activities"].find_one({"_id": activity_id}, _WINDOW)
    return {**window, "waitlist_seq": seen["waitlist_seq"] + 1,
            "waitlist_count": seen["waitlist_count"] + 1}  # fmt: skip


async def join_pending(ctx, activity_id: ObjectId) -> dict | None:
    query = {"_id": activity_id, "approval": "manual", **_open_for_signup(ctx.clock.now())}
    joined = await ctx.db["activities"].update_one(
        query, {"$inc": {"pending_count": 1}, **_touched(ctx)}
    )
    if not joined.matched_count:
        return None
    return await ctx.db["activities"].find_one({"_id": activity_id}, _WINDOW)


async def front_of_waitlist(ctx, activity_id: ObjectId, seats: int) -> int:
    """The first of `seats` numbers ahead of everyone waiting (people moved off confirmed go
    first)."""
    seen = await _change_as_read(
        ctx, activity_id, ("waitlist_front",), lambda _: {"$inc": {"waitlist_front": -seats}}
    )
    return seen["waitlist_front"] - seats


async def adjust_counts(ctx, activity_id: ObjectId, **deltas: int) -> None:
    changes = {f"{name}_count": delta for name, delta in deltas.items() if delta}
    if deltas.get("confirmed"):
        changes["seats_left"] = -deltas["confirmed"]
    if changes:
        await ctx.db["activities"].update_one(
            {"_id": activity_id}, {"$inc": changes, **_touched(ctx)}
        )


async def set_capacity(ctx, activity_id: ObjectId, capacity: int, *, min_confirmed: bool) -> dict:
    """New capacity; with `min_confirmed`, refused when fewer seats than confirmed people.
    Returns the activity's status, capacity and confirmed count as they were just before.

    `seats_left` is computed from the confirmed count read, so the write is conditional on that
    count (and on the status and capacity reported back) not having moved meanwhile.
    """

    def change(seen: dict) -> dict | None:
        if seen["status"] not in ("draft", "published"):
            return None
        if min_confirmed and seen["confirmed_count"] > capacity:
            return None
        left = capacity - seen["confirmed_count"]
        return {
            "$set": {"capacity": capacity, "seats_left": left, "seats_touched_at": ctx.clock.now()}
        }

    before = await _change_as_read(
        ctx, activity_id, ("status", "capacity", "confirmed_count"), change
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


COUNTERS = ("confirmed_count", "waitlist_count", "pending_count", "seats_left", "capacity",
            "seats_touched_at", "status")  # fmt: skip
"""What an observation of an activity's seats reads (and a recount's compare-and-set checks)."""


async def counters(ctx, activity_id: ObjectId) -> dict | None:
    """The seat counters as they stand (`COUNTERS`), or None when the activity is gone."""
    doc = await ctx.db["activities"].find_one({"_id": activity_id}, dict.fromkeys(COUNTERS, 1))
    return None if doc is None else {name: doc.get(name) for name in COUNTERS}


async def touched_since(ctx, since: datetime | None) -> list[ObjectId]:
    """Activities whose counters changed at or after `since` (every one that was ever touched,
    with None), oldest first. Not a request path: the repair's candidates."""
    query = {"seats_touched_at": {"$gte": since} if since else {"$exists": True}}
    return [doc["_id"] async for doc in ctx.db["activities"].find(query, {"_id": 1}).sort("_id")]


async def set_counts(ctx, activity_id: ObjectId, seen: dict, counts: dict[str, int]) -> bool:
    """Overwrite the counters with a recount (`seats_left` from the capacity), only while every
    one of `COUNTERS` still holds the value in `seen`; False when something moved meanwhile."""
    changes = {f"{name}_count": n for name, n in counts.items()}
    changes.update(seats_left=seen["capacity"] - counts["confirmed"],
                   seats_touched_at=ctx.clock.now())  # fmt: skip
    written = await ctx.db["activities"].update_one({"_id": activity_id, **seen}, {"$set": changes})
    return written.matched_count == 1


async def backfill(ctx) -> int:
    """Migration: `seats_left` on activities written before it existed, in batches by _id.

    Each write is conditional on the field still missing and the counts still as read, so it
    never overwrites a value another process keeps; a batch with misses is read again.
    Returns how many activities were given the field.
    """
    coll = ctx.db["activities"]
    done, after = 0, None
    while True:
        query: dict = {"seats_left": {"$exists": False}}
        if after is not None:
            query["_id"] = {"$gt": after}
        batch = (
            await coll.find(query, {"capacity": 1, "confirmed_count": 1})
            .sort("_id", 1)
            .to_list(_BACKFILL_BATCH)
        )
        if not batch:
            return done
        written = await coll.bulk_write(
            [
                UpdateOne(
                    {**doc, "seats_left": {"$exists": False}},
                    {"$set": {"seats_left": doc["capacity"] - doc["confirmed_count"]}},
                )
                for doc in batch
            ],
            ordered=False,
        )
        done += written.matched_count
        if written.matched_count == len(batch):
            after = batch[-1]["_id"]
