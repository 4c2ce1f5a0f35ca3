"""Sign-ups: one record per volunteer and activity, never more seats than capacity, a fair
waitlist, and nobody in two places at once.

Owns the `signups` collection. Seats are counted on the activity (server/domain/seats.py)
with conditional updates on its _id; the record here says who holds each one. A record changes
status by a compare-and-set: `find_one` on an index (the unique (activity_id, user_id), or
(activity_id, status, seq) for the head of the waitlist), then `update_one({_id, status: as
read})`, read again and retried when another writer changed it first. No findAndModify and no
`$expr`: the embedded server answers those in time proportional to the collection. Rosters and
a volunteer's own list read the records in server/domain/rosters.py.

The order of writes (seat first, then record, then the overlap check) means a crash can leave a
counter off by the requests that were in flight, never an oversold activity; the repair in
server/domain/signup_repair.py, run at start and daily, finds and mends those.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
import structlog
from bson import ObjectId
from pymongo.errors import DuplicateKeyError, PyMongoError

from server.domain import activities, events, seats
from server.domain.errors import Conflict, NotFound, Unavailable
from server.domain.ids import parse_id

log = structlog.get_logger(__name__)

ACTIVE = ("confirmed", "waitlisted", "pending")
ENDED = ("cancelled", "rejected")  # a new sign-up may reuse the record
COUNTER_OF = {"confirmed": "confirmed", "waitlisted": "waitlist", "pending": "pending"}


class SignupOut(msgspec.Struct, omit_defaults=True):
    id: str
    activity_id: str
    status: str
    waitlist_position: int | None = None
    cancel_reason: str | None = None


class CapacityChange(msgspec.Struct):
    capacity: int
    moved_to_waitlist: list[str]
    promoted: list[str]


# -- helpers ----------------------------------------------------------------------------------


def _coll(ctx):
    return ctx.db["signups"]


async def waitlist_position(ctx, record: dict) -> int:
    """A waitlisted record's place in the queue: 1 is the next to be promoted."""
    ahead = await _coll(ctx).count_documents(
        {
            "activity_id": record["activity_id"],
            "status": "waitlisted",
            "seq": {"$lt": record["seq"]},
        }
    )
    return ahead + 1


async def _out(ctx, record: dict) -> SignupOut:
    return SignupOut(
        id=str(record["_id"]),
        activity_id=str(record["activity_id"]),
        status=record["status"],
        waitlist_position=await waitlist_position(ctx, record)
        if record["status"] == "waitlisted"
        else None,
        cancel_reason=record.get("cancel_reason"),
    )


async def _compare_and_set(ctx, record: dict, update: dict) -> bool:
    """Apply `update` to the record if its status is still the one read; False if it moved."""
    guard = {"_id": record["_id"], "status": record["status"]}
    return (await _coll(ctx).update_one(guard, update)).matched_count == 1


async def _overlapping(ctx, user_id: ObjectId, record: dict) -> dict | None:
    """Another confirmed activity of the same user that overlaps this one in time."""
    return await _coll(ctx).find_one(
        {
            "user_id": user_id,
            "status": "confirmed",
            "activity_id": {"$ne": record["activity_id"]},
            "starts_at": {"$lt": record["ends_at"]},
            "ends_at": {"$gt": record["starts_at"]},
        },
        {"activity_id": 1},
    )


async def _closed_reason(ctx, activity_id: ObjectId) -> Exception:
    """Why a conditional seat update found nothing: the activity is gone, closed or full."""
    doc = await activities.get_doc(ctx, activity_id)
    now = ctx.clock.now()
    if doc["status"] == "draft":
        return NotFound("活动不存在", field="activity_id")
    if doc["status"] != "published" or now >= doc["signup_deadline"] or now >= doc["starts_at"]:
        return Conflict("报名已截止", code="signup_closed")
    return Conflict("名额已满", code="activity_full")


# -- signing up -------------------------------------------------------------------------------


async def sign_up(ctx, user_id: ObjectId, activity_id) -> tuple[SignupOut, bool]:
    """The user's sign-up and whether this call created it (a repeat returns the same record).

    The common cases cost one conditional update each (a seat, else a waitlist place); only
    when both fail does it look at the activity to say why, or queue a manual approval.
    """
    activity_id = parse_id(activity_id, "activity_id")
    status, seq = "confirmed", None
    window = await seats.take_seat(ctx, activity_id, by="signup")
    if window is None:
        window = await seats.join_waitlist(ctx, activity_id, approval="auto")
        if window is not None:
            status, seq = "waitlisted", window["waitlist_seq"]
    if window is None:
        status, window, seq = await _place_without_seat(ctx, user_id, activity_id)
        if window is None:
            return seq, False  # an existing sign-up, returned as it is
    record = new_record(activity_id, user_id, status, window, seq, ctx.clock.now())
    try:
        await _coll(ctx).insert_one(record)
        created = True
    except DuplicateKeyError:
        record, created = await _renew(ctx, user_id, activity_id, record)
        if not created:
            await _give_back(ctx, activity_id, status)
            return await _out(ctx, record), False
    except PyMongoError:
        # It may have landed all the same (a timeout): the repair recounts, not a give-back.
        await events.emit(ctx, events.SIGNUP_WRITE_FAILED, activity_id=activity_id)
        raise
    if await _overlapping(ctx, user_id, record):
        await _undo(ctx, record, status)
        raise Conflict("与您已确认的另一活动时间冲突", code="time_conflict")
    # A seat freed while we queued found no record of ours to promote: read the seats afresh,
    # or it would wait for the next cancellation.
    seat_free = status == "waitlisted" and await seats.seats_left(ctx, activity_id) > 0
    if seat_free and user_id in await promote(ctx, activity_id):  # which announced it
        return await _out(ctx, await _coll(ctx).find_one({"_id": record["_id"]})), created
    kind = {"confirmed": events.SIGNUP_CONFIRMED, "waitlisted": events.SIGNUP_WAITLISTED}
    await events.emit(
        ctx, kind.get(status, events.SIGNUP_PENDING), activity_id=activity_id, user_id=user_id,
        signup_id=record["_id"], title=window["title"], starts_at=window["starts_at"],
        address=window.get("address"), tags=window.get("tags", []),
    )  # fmt: skip
    if status == "waitlisted":
        # Our place as we joined, without counting the queue again.
        return SignupOut(
            id=str(record["_id"]),
            activity_id=str(activity_id),
            status=status,
            waitlist_position=window["waitlist_count"],
        ), created
    return await _out(ctx, record), created


def new_record(
    activity_id: ObjectId, user_id: ObjectId, status: str, window: dict, seq: int | None, now
) -> dict:
    """A sign-up record as stored; `window` is what the seat or waitlist update returned."""
    record = {
        "_id": ObjectId(),
        "activity_id": activity_id,
        "user_id": user_id,
        "status": status,
        "starts_at": window["starts_at"],
        "ends_at": window["ends_at"],
        "created_at": now,
        "updated_at": now,
    }
    if status == "confirmed":
        record["confirmed_at"] = now
    if seq is not None:
        record["seq"] = seq
    return record


async def import_signups(ctx, records: list[dict]) -> int:
    """Bulk path for data loads: records built by `new_record`, written in one call. The
    activities' counters must be given to match (activities.activity_doc takes them)."""
    if not records:
        return 0
    result = await _coll(ctx).insert_many(records, ordered=False)
    return len(result.inserted_ids)


async def _place_without_seat(ctx, user_id: ObjectId, activity_id: ObjectId):
    """Neither a seat nor a waitlist place: an existing sign-up, the approval queue, or why not."""
    existing = await _coll(ctx).find_one(
        {"activity_id": activity_id, "user_id": user_id, "status": {"$in": list(ACTIVE)}}
    )
    if existing is not None:
        return existing["status"], None, await _out(ctx, existing)
    doc = await activities.get_doc(ctx, activity_id)
    if doc["approval"] == "manual":
        window = await seats.join_pending(ctx, activity_id)
        if window is not None:
            return "pending", window, None
    raise await _closed_reason(ctx, activity_id)


async def _renew(ctx, user_id: ObjectId, activity_id: ObjectId, fresh: dict) -> tuple[dict, bool]:
    """A record already exists: reuse it if it had ended (cancelled, rejected), else return it
    as it is (a repeat, or one being decided)."""
    changes = {k: v for k, v in fresh.items() if k not in ("_id", "created_at")}
    for attempt in range(seats.TRIES):
        current = await _coll(ctx).find_one({"activity_id": activity_id, "user_id": user_id})
        if current is None:  # taken back since (a time conflict): this one takes its place
            try:
                await _coll(ctx).insert_one(fresh)
                return fresh, True
            except DuplicateKeyError:
                continue
        if current["status"] not in ENDED:
            return current, False
        unset = {"cancel_reason": "", "cancelled_at": ""}
        if await _compare_and_set(ctx, current, {"$set": changes, "$unset": unset}):
            current.pop("cancel_reason", None)
            current.pop("cancelled_at", None)
            return {**current, **changes}, True
        await seats.pause(attempt)
    raise seats.too_busy()


async def _give_back(ctx, activity_id: ObjectId, status: str) -> None:
    await seats.adjust_counts(ctx, activity_id, **{COUNTER_OF[status]: -1})
    if status == "confirmed":
        await promote(ctx, activity_id)


async def _undo(ctx, record: dict, status: str) -> None:
    """Take back a sign-up that must not stand, leaving things as they were."""
    await _coll(ctx).delete_one({"_id": record["_id"]})
    await _give_back(ctx, record["activity_id"], status)


# -- leaving and promotion --------------------------------------------------------------------


async def cancel_signup(ctx, user_id: ObjectId, activity_id) -> SignupOut:
    activity_id = parse_id(activity_id, "activity_id")
    doc = await activities.get_doc(ctx, activity_id)
    if ctx.clock.now() >= doc["starts_at"] and doc["status"] != "cancelled":
        raise Conflict("活动已开始，不能取消报名", code="signup_closed")
    await seats.touch(ctx, activity_id)  # the record changes first, the counters after
    for attempt in range(seats.TRIES):
        before = await _coll(ctx).find_one({"activity_id": activity_id, "user_id": user_id})
        if before is None:
            raise NotFound("没有该活动的报名", field="activity_id")
        if before["status"] not in ACTIVE:
            return await _out(ctx, before)  # cancelled already: the retry gets the same answer
        now = ctx.clock.now()
        cancelled = {"status": "cancelled", "cancel_reason": "by_volunteer",
                     "cancelled_at": now, "updated_at": now}  # fmt: skip
        if await _compare_and_set(ctx, before, {"$set": cancelled, "$unset": {"seq": ""}}):
            break
        await seats.pause(attempt)  # promoted or moved meanwhile: what it is now is given back
    else:
        raise seats.too_busy()
    await _give_back(ctx, activity_id, before["status"])
    await events.emit(
        ctx, events.SIGNUP_CANCELLED, activity_id=activity_id, user_id=user_id,
        signup_id=before["_id"], was=before["status"],
    )  # fmt: skip
    return SignupOut(id=str(before["_id"]), activity_id=str(activity_id), status="cancelled")


async def _head_of_waitlist(ctx, activity_id: ObjectId) -> dict | None:
    return await _coll(ctx).find_one(
        {"activity_id": activity_id, "status": "waitlisted"}, sort=[("seq", 1)]
    )


async def _confirm_head(ctx, activity_id: ObjectId) -> dict | None:
    """Give a seat already taken to the first one waiting; None when nobody waits. Concurrent
    promoters read the same head: the one whose compare-and-set lands has it, the others read
    the next; within the process they take turns, so that they seldom miss."""
    async with ctx.seat_turns.of((activity_id, "head_of_waitlist")):
        for attempt in range(seats.TRIES):
            head = await _head_of_waitlist(ctx, activity_id)
            if head is None:
                return None
            now = ctx.clock.now()
            changes = {"status": "confirmed", "confirmed_at": now, "promoted_at": now}
            if await _compare_and_set(ctx, head, {"$set": changes, "$unset": {"seq": ""}}):
                head.pop("seq", None)
                return {**head, **changes}
            await seats.pause(attempt)
    raise seats.too_busy()


async def promote(ctx, activity_id: ObjectId) -> list[ObjectId]:
    """Fill free seats from the head of the waitlist, in order; returns who was promoted."""
    promoted: list[ObjectId] = []
    while await seats.take_seat(ctx, activity_id, by="promotion") is not None:
        try:
            record = await _confirm_head(ctx, activity_id)
        except Unavailable:
            await seats.adjust_counts(ctx, activity_id, confirmed=-1)
            raise
        if record is None:
            await seats.adjust_counts(ctx, activity_id, confirmed=-1)
            # One who queued meanwhile read the seat as still taken, and left it to us.
            if await _head_of_waitlist(ctx, activity_id) is None:
                break
            continue
        await seats.adjust_counts(ctx, activity_id, waitlist=-1)
        if await _overlapping(ctx, record["user_id"], record):
            # They confirmed something at the same time while waiting: the seat goes on.
            dropped = {"status": "cancelled", "cancel_reason": "time_conflict"}
            if await _compare_and_set(ctx, record, {"$set": dropped}):  # else they left first
                await seats.adjust_counts(ctx, activity_id, confirmed=-1)
                await events.emit(
                    ctx, events.SIGNUP_CANCELLED, activity_id=activity_id,
                    user_id=record["user_id"], signup_id=record["_id"], was="waitlisted",
                )  # fmt: skip
            continue
        promoted.append(record["user_id"])
        await events.emit(
            ctx, events.WAITLIST_PROMOTED, activity_id=activity_id,
            user_id=record["user_id"], signup_id=record["_id"],
        )  # fmt: skip
    return promoted


# -- organisers -------------------------------------------------------------------------------


async def decide(
    ctx, activity_id, user_id: ObjectId, decision: Literal["approve", "reject"]
) -> SignupOut:
    """Approve or reject a pending sign-up (manual approval mode)."""
    activity_id = parse_id(activity_id, "activity_id")
    await seats.touch(ctx, activity_id)  # the record changes first, the counters after
    for attempt in range(seats.TRIES):
        record = await _coll(ctx).find_one({"activity_id": activity_id, "user_id": user_id})
        if record is None or record["status"] != "pending":
            raise NotFound("没有待审核的报名", field="user_id")
        # "deciding" holds the record for this call: nothing else moves it on from there.
        claim = {"status": "deciding", "updated_at": ctx.clock.now()}
        if await _compare_and_set(ctx, record, {"$set": claim}):
            record.update(claim)
            break
        await seats.pause(attempt)
    else:
        raise seats.too_busy()
    await seats.adjust_counts(ctx, activity_id, pending=-1)
    if decision == "reject":
        return await _settle(ctx, record, "rejected", events.SIGNUP_REJECTED)
    if await seats.take_seat(ctx, activity_id, by="approval") is not None:
        return await _settle(ctx, record, "confirmed", events.SIGNUP_CONFIRMED)
    window = await seats.join_waitlist(ctx, activity_id, approval=None)
    if window is not None:
        waiting = await _settle(
            ctx, record, "waitlisted", events.SIGNUP_WAITLISTED, seq=window["waitlist_seq"]
        )
        # As in sign_up: a seat freed while the record was still deciding found nobody.
        if await seats.seats_left(ctx, activity_id) > 0 and user_id in await promote(
            ctx, activity_id
        ):
            return await _out(ctx, await _coll(ctx).find_one({"_id": record["_id"]}))
        return waiting
    await _compare_and_set(ctx, record, {"$set": {"status": "pending"}})
    await seats.adjust_counts(ctx, activity_id, pending=1)
    raise await _closed_reason(ctx, activity_id)


async def _settle(ctx, record: dict, status: str, event: str, **extra) -> SignupOut:
    changes = {"status": status, "updated_at": ctx.clock.now(), **extra}
    if status == "confirmed":
        changes["confirmed_at"] = ctx.clock.now()
    await _compare_and_set(ctx, record, {"$set": changes})
    record = {**record, **changes}
    await events.emit(
        ctx, event, activity_id=record["activity_id"], user_id=record["user_id"],
        signup_id=record["_id"],
    )  # fmt: skip
    return await _out(ctx, record)


async def change_capacity(
    ctx, activity_id, capacity: int, overflow: Literal["refuse", "waitlist"]
) -> CapacityChange:
    """Raise or lower capacity. Lowering below the confirmed count is refused, or with
    overflow="waitlist" moves the most recently confirmed to the head of the waitlist.

    A published activity whose capacity changed announces ACTIVITY_CHANGED: activity_id,
    changed (each changed field and its new value) and user_ids (who signed up and is to be
    told: everyone but those promoted, whom their own event told)."""
    activity_id = parse_id(activity_id, "activity_id")
    before = await seats.set_capacity(
        ctx, activity_id, capacity, min_confirmed=overflow == "refuse"
    )
    moved: list[ObjectId] = []
    excess = before["confirmed_count"] - capacity
    if excess > 0:
        newest = (
            await _coll(ctx)
            .find({"activity_id": activity_id, "status": "confirmed"})
            .sort([("confirmed_at", -1), ("_id", -1)])
            .to_list(excess)
        )
        front = await seats.front_of_waitlist(ctx, activity_id, len(newest))
        # The earliest confirmed of those moved keeps the best place.
        for seq, record in enumerate(reversed(newest), start=front):
            changed = await _coll(ctx).update_one(
                {"_id": record["_id"], "status": "confirmed"},
                {"$set": {"status": "waitlisted", "seq": seq, "updated_at": ctx.clock.now()}},
            )
            if changed.modified_count:
                await seats.adjust_counts(ctx, activity_id, confirmed=-1, waitlist=1)
                moved.append(record["user_id"])
                await events.emit(
                    ctx, events.MOVED_TO_WAITLIST, activity_id=activity_id,
                    user_id=record["user_id"], signup_id=record["_id"],
                )  # fmt: skip
    promoted = await promote(ctx, activity_id)
    if before["status"] == "published" and before["capacity"] != capacity:
        signed_up = (
            await _coll(ctx)
            .find({"activity_id": activity_id, "status": {"$in": list(ACTIVE)}}, {"user_id": 1})
            .to_list(None)
        )
        told = set(promoted)
        await events.emit(
            ctx, events.ACTIVITY_CHANGED, activity_id=activity_id, changed={"capacity": capacity},
            user_ids=[r["user_id"] for r in signed_up if r["user_id"] not in told],
        )  # fmt: skip
    return CapacityChange(
        capacity=capacity,
        moved_to_waitlist=[str(u) for u in moved],
        promoted=[str(u) for u in promoted],
    )


async def cancel_activity(ctx, activity_id, *, reason: str | None) -> str:
    """Cancel an activity: every sign-up ends and everyone who had one is told."""
    activity_id = parse_id(activity_id, "activity_id")
    if not await activities.mark_cancelled(ctx, activity_id, reason=reason):
        return "cancelled"
    await end_signups(ctx, activity_id, reason=reason)
    return "cancelled"


async def end_signups(ctx, activity_id: ObjectId, *, reason: str | None) -> None:
    """The sign-ups of a cancelled activity end, and everyone who had one is told."""
    affected = (
        await _coll(ctx)
        .find({"activity_id": activity_id, "status": {"$in": [*ACTIVE, "deciding"]}},
              {"user_id": 1})
        .to_list(None)
    )  # fmt: skip
    await _coll(ctx).update_many(
        {"activity_id": activity_id, "status": {"$in": [*ACTIVE, "deciding"]}},
        {
            "$set": {
                "status": "cancelled",
                "cancel_reason": "activity_cancelled",
                "cancelled_at": ctx.clock.now(),
            },
            "$unset": {"seq": ""},
        },
    )
    await events.emit(
        ctx, events.ACTIVITY_CANCELLED, activity_id=activity_id, reason=reason,
        user_ids=[r["user_id"] for r in affected],
    )  # fmt: skip


async def is_confirmed(ctx, activity_id: ObjectId, user_id: ObjectId) -> bool:
    found = await _coll(ctx).find_one(
        {"activity_id": activity_id, "user_id": user_id, "status": "confirmed"}, {"_id": 1}
    )
    return found is not None


# -- what the repair after a crash (server/domain/signup_repair.py) reads and mends ----------


async def reopen_decision(ctx, record_id: ObjectId, updated_at: datetime) -> None:
    """A decision cut short by a crash goes back to the organiser, if it still is as read."""
    await _coll(ctx).update_one(
        {"_id": record_id, "status": "deciding", "updated_at": updated_at},
        {"$set": {"status": "pending", "updated_at": ctx.clock.now()}},
    )
