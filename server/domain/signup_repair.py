"""Repair after a crash: sign-up counters back in step with the records.

Owns nothing: it reads the seat counters (server/domain/seats.py) and the records (through
server/domain/rosters.py) and mends them through seats.py and server/domain/signups.py.

The order of a sign-up's writes (seat first, then record) means a crash can leave an activity's
counters off by the requests that were in flight. Every counter write marks the activity
(seats.py); a marked activity whose counters disagree with its records the same way at two looks
`REPAIR_SETTLE_S` apart (so no sign-up is in flight there) gets the recount by a compare-and-set
on the counters as read, then its free seats go to the head of the waitlist. Run at start (in
the background), by the daily job, and on an activity whose sign-up failed to write its record
(`events.SIGNUP_WRITE_FAILED`), so its seat is not held until the night.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

import msgspec
import structlog
from bson import ObjectId

from server.domain import activities, events, rosters, seats, signups

log = structlog.get_logger(__name__)

REPAIR_SETTLE_S = 10.0
"""How far apart the repair's two looks at an activity are: longer than a sign-up takes from its
counter write to its record write even in a burst (a whole sign-up's p99 is 5 s in
bench/signup_burst.py), so counters and records unchanged over it have no request in flight."""
REPAIR_ROUNDS = 6
"""Looks again at an activity that moved meanwhile, before leaving it to the next repair."""


class _Look(msgspec.Struct, frozen=True):
    counters: dict  # seats.COUNTERS as read
    counts: dict[str, int]  # the records, by counter (a decision cut short counts as pending)
    deciding: tuple  # (_id, updated_at) of records held by a decision

    def drifted(self) -> bool:
        c = self.counts
        if self.counters["status"] == "cancelled":
            c = dict.fromkeys(c, 0)  # its records should have ended with it
            if any(self.counts.values()):
                return True
        return bool(self.deciding) or (
            self.counters["confirmed_count"], self.counters["waitlist_count"],
            self.counters["pending_count"], self.counters["seats_left"],
        ) != (c["confirmed"], c["waitlist"], c["pending"],
              self.counters["capacity"] - c["confirmed"])  # fmt: skip


async def _look(ctx, activity_id: ObjectId) -> _Look | None:
    counters = await seats.counters(ctx, activity_id)
    if counters is None:
        return None
    counts, deciding = {"confirmed": 0, "waitlist": 0, "pending": 0}, []
    async for record in rosters.active_records(ctx, activity_id):
        if record["status"] == "deciding":
            deciding.append((record["_id"], record["updated_at"]))
        counts[signups.COUNTER_OF.get(record["status"], "pending")] += 1
    return _Look(counters, counts, tuple(sorted(deciding)))


async def _fix(ctx, activity_id: ObjectId, look: _Look) -> bool:
    """Counters from the records, if they still are as `look` saw them; False if they moved."""
    counts = dict(look.counts)
    if look.counters["status"] == "cancelled":
        if any(counts.values()):  # the cancellation was cut short between activity and records
            doc = await activities.get_doc(ctx, activity_id)
            await signups.end_signups(ctx, activity_id, reason=doc.get("cancel_reason"))
        counts = dict.fromkeys(counts, 0)
    for record_id, updated_at in look.deciding:  # a decision cut short: back to the organiser
        await signups.reopen_decision(ctx, record_id, updated_at)
    if not await seats.set_counts(ctx, activity_id, look.counters, counts):
        return False
    before = {k: look.counters[k] for k in ("confirmed_count", "waitlist_count",
                                            "pending_count", "seats_left")}  # fmt: skip
    after = {f"{name}_count": n for name, n in counts.items()}
    after["seats_left"] = look.counters["capacity"] - counts["confirmed"]
    log.warning(
        "signup_counters_repaired", activity_id=str(activity_id), before=before, after=after,
        decisions_reopened=len(look.deciding),
    )  # fmt: skip
    return True


async def _fill(ctx, activity_id: ObjectId, look: _Look) -> int:
    """Free seats to the head of the waitlist (a crash may have come between a cancellation
    and its promotion); how many were promoted."""
    free = look.counters["capacity"] - look.counts["confirmed"]
    if look.counters["status"] != "published" or free <= 0 or not look.counts["waitlist"]:
        return 0
    return len(await signups.promote(ctx, activity_id))


def register(bus: events.EventBus) -> None:
    bus.subscribe(events.SIGNUP_WRITE_FAILED, _on_write_failed)


async def _on_write_failed(ctx, kind: str, *, activity_id: ObjectId) -> None:
    ctx.background.spawn(repair(ctx, since=None, activity_ids=[activity_id]), "signup_repair")


async def repair(
    ctx,
    *,
    since: datetime | None,
    settle: Callable[[], Awaitable[None]] | None = None,
    activity_ids: list[ObjectId] | None = None,
) -> dict[str, int]:
    """Counters that a crash left out of step with the records, on the activities touched since
    `since` (all, with None; only `activity_ids` when given): each is recounted once it reads
    the same at two looks a settle apart (`REPAIR_SETTLE_S`; `settle` replaces the wait), by a
    compare-and-set on the counters as read, so a sign-up in flight is never repaired away;
    then free seats go to the waitlist.

    Returns counts: checked, repaired, promoted, and busy (still moving after the last round,
    left to the next repair). Several processes may run it at once.
    """
    settle = settle or (lambda: asyncio.sleep(REPAIR_SETTLE_S))
    tally = {"checked": 0, "repaired": 0, "promoted": 0, "busy": 0}
    waiting: dict[ObjectId, _Look] = {}
    ids = activity_ids if activity_ids is not None else await seats.touched_since(ctx, since)
    for activity_id in ids:
        tally["checked"] += 1
        look = await _look(ctx, activity_id)
        if look is not None and look.drifted():
            waiting[activity_id] = look
        elif look is not None:
            tally["promoted"] += await _fill(ctx, activity_id, look)
    for _ in range(REPAIR_ROUNDS):
        if not waiting:
            break
        await settle()
        moving: dict[ObjectId, _Look] = {}
        for activity_id, first in waiting.items():
            again = await _look(ctx, activity_id)
            if again is None:
                continue
            if again == first and await _fix(ctx, activity_id, first):
                tally["repaired"] += 1
                again = await _look(ctx, activity_id)
            if again is None:
                continue
            if again.drifted():
                moving[activity_id] = again  # in flight: looked at again after a settle
            else:
                tally["promoted"] += await _fill(ctx, activity_id, again)
        waiting = moving
    tally["busy"] = len(waiting)
    log.info("signup_repair_done", since=since.isoformat() if since else None, **tally)
    return tally
