"""Disputes of hours records, and each record's trail.

Owns `hours_disputes`. A volunteer reports an error in one of their records; staff where the
record lies list the open ones and resolve each, `upheld` (with the corrected hours, made as a
bounded adjustment) or `rejected` (with a reason); the volunteer is told either way. A record
has at most one open dispute: a unique index over open ones settles two raised at once. One
left open for `OVERDUE_AFTER` is reminded to the organiser, once.

A record's history is derived, not kept a third time: the ledger is append-only and each of
its entries already says who, when, what and why; the disputes and the adjustment requests
say the rest. One source each means the history cannot disagree with what it describes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

import msgspec
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from server.domain import activities, adjustments, events, hours, identity
from server.domain.errors import Conflict, InvalidRequest, NotFound
from server.domain.ids import parse_id
from server.domain.paging import DEFAULT_LIMIT, page_by_id_any
from server.domain.text import lines

OVERDUE_AFTER = timedelta(days=3)


class DisputeOut(msgspec.Struct):
    dispute_id: str
    record_id: str
    user_id: str
    volunteer_name: str
    activity_title: str | None
    reason: str  # the volunteer's
    status: Literal["open", "resolved"]
    raised_at: datetime
    outcome: Literal["upheld", "rejected"] | None = None
    answer: str | None = None  # the staff's reason
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    adjustment_id: str | None = None  # an upheld change above the bound, awaiting approval


class DisputePage(msgspec.Struct):
    items: list[DisputeOut]
    next_cursor: str | None


class Resolution(msgspec.Struct, forbid_unknown_fields=True):
    outcome: Literal["upheld", "rejected"]
    reason: lines(500, 2)
    hours: Annotated[float, msgspec.Meta(ge=0, le=24 * 31)] | None = None  # upheld: the value


class HistoryEntry(msgspec.Struct):
    at: datetime
    action: str  # created, confirmed, adjusted, reversed, disputed, resolved, adjustment_*
    actor_id: str | None  # None: the service (a check-out's credit, a closed check-in)
    actor_name: str | None
    hours: float | None = None  # the record's value after this step, or the value asked for
    reason: str | None = None
    outcome: str | None = None


class History(msgspec.Struct):
    record_id: str
    items: list[HistoryEntry]


_ORDER = {"created": 0, "confirmed": 1, "disputed": 2, "adjustment_requested": 3,
          "adjusted": 5, "reversed": 5}  # fmt: skip


def _disputes(ctx):
    return ctx.db["hours_disputes"]


async def raise_dispute(ctx, user_id: ObjectId, record_id, reason: str) -> None:
    """A volunteer reports an error in their record; the organiser must check it."""
    credit = await hours.own_credit(ctx, user_id, record_id)
    try:
        await _disputes(ctx).insert_one(
            {
                "record_id": credit["_id"],
                "user_id": user_id,
                "org_id": credit["org_id"],
                "site_id": credit.get("site_id"),
                "activity_id": credit.get("activity_id"),
                "reason": reason,
                "status": "open",
                "at": ctx.clock.now(),
            }
        )
    except DuplicateKeyError:
        raise Conflict("该记录已有待处理的异议", code="dispute_open") from None
    await events.emit(ctx, events.HOURS_DISPUTED, record_id=credit["_id"], org_id=credit["org_id"])


async def _out(ctx, docs: list[dict]) -> list[DisputeOut]:
    people = await identity.briefs(ctx, sorted({d["user_id"] for d in docs}))
    titles = await activities.titles(
        ctx, sorted({d["activity_id"] for d in docs if d.get("activity_id")})
    )
    return [
        DisputeOut(
            dispute_id=str(d["_id"]),
            record_id=str(d["record_id"]),
            user_id=str(d["user_id"]),
            volunteer_name=hours.masked_name(people.get(d["user_id"], {}).get("real_name")),
            activity_title=titles.get(d.get("activity_id")),
            reason=d["reason"],
            status=d["status"],
            raised_at=d["at"],
            outcome=d.get("outcome"),
            answer=d.get("answer"),
            resolved_by=str(d["resolved_by"]) if d.get("resolved_by") else None,
            resolved_at=d.get("resolved_at"),
            adjustment_id=str(d["adjustment_id"]) if d.get("adjustment_id") else None,
        )
        for d in docs
    ]


async def list_disputes(
    ctx,
    *,
    org_ids: list[ObjectId],
    site_ids: list[ObjectId],
    status: Literal["open", "resolved"],
    cursor: str | None,
    limit: int = DEFAULT_LIMIT,
) -> DisputePage:
    """Disputes of records where the caller may read hours, oldest first."""
    queries = [{"org_id": {"$in": org_ids}, "status": status}] if org_ids else []
    if site_ids:
        queries.append({"site_id": {"$in": site_ids}, "status": status})
    if not queries:
        return DisputePage(items=[], next_cursor=None)
    docs, following = await page_by_id_any(_disputes(ctx), queries, cursor, limit)
    return DisputePage(items=await _out(ctx, docs), next_cursor=following)


async def resolve(ctx, by: ObjectId, dispute_id, resolution: Resolution) -> DisputeOut:
    """Decide an open dispute. Upheld, the record is corrected as any adjustment is: within
    the bound at once, above it once a second staff member approves (`adjustment_id`)."""
    dispute = await _disputes(ctx).find_one({"_id": parse_id(dispute_id, "dispute_id")})
    if dispute is None:
        raise NotFound("异议不存在", field="dispute_id")
    await hours.staff_credit(ctx, by, dispute["record_id"], "hours.confirm")
    if resolution.outcome == "upheld" and resolution.hours is None:
        raise InvalidRequest("采纳异议须给出更正后的时长", field="hours")
    decided = {
        "status": "resolved",
        "outcome": resolution.outcome,
        "answer": resolution.reason,
        "resolved_by": by,
        "resolved_at": ctx.clock.now(),
    }
    # Compare-and-set on the open state: two staff resolving at once make one decision.
    claimed = await _disputes(ctx).update_one(
        {"_id": dispute["_id"], "status": "open"}, {"$set": decided}
    )
    if claimed.modified_count != 1:
        raise Conflict("该异议已处理", code="dispute_resolved")
    dispute.update(decided)
    if resolution.outcome == "upheld":
        change = hours.Adjustment(hours=resolution.hours, reason=resolution.reason)
        record = await adjustments.adjust(
            ctx, by, dispute["record_id"], change, dispute_id=dispute["_id"]
        )
        if record.pending_adjustment_id:
            dispute["adjustment_id"] = ObjectId(record.pending_adjustment_id)
            await _disputes(ctx).update_one(
                {"_id": dispute["_id"]}, {"$set": {"adjustment_id": dispute["adjustment_id"]}}
            )
    await events.emit(
        ctx, events.HOURS_DISPUTE_RESOLVED, dispute_id=dispute["_id"],
        record_id=dispute["record_id"], user_id=dispute["user_id"],
        activity_id=dispute.get("activity_id"), outcome=resolution.outcome,
        reason=resolution.reason,
    )  # fmt: skip
    [out] = await _out(ctx, [dispute])
    return out


async def remind_overdue(ctx) -> int:
    """Disputes open for longer than `OVERDUE_AFTER`: each reminded to the organiser once
    (the daily job)."""
    cutoff = ctx.clock.now() - OVERDUE_AFTER
    reminded = 0
    async for dispute in _disputes(ctx).find({"status": "open", "at": {"$lt": cutoff}}):
        if dispute.get("reminded_at"):
            continue
        marked = await _disputes(ctx).update_one(
            {"_id": dispute["_id"], "reminded_at": None}, {"$set": {"reminded_at": ctx.clock.now()}}
        )
        if marked.modified_count:
            reminded += 1
            await events.emit(
                ctx, events.HOURS_DISPUTE_OVERDUE, dispute_id=dispute["_id"],
                org_id=dispute["org_id"], activity_id=dispute.get("activity_id"),
                raised_at=dispute["at"],
            )  # fmt: skip
    return reminded


async def my_hours(ctx, user_id: ObjectId) -> hours.MyHours:
    """My hours, each record with its latest dispute (its status, outcome and answer)."""
    mine = await hours.my_hours(ctx, user_id)
    ids = [ObjectId(r.record_id) for r in mine.records]
    latest: dict[ObjectId, dict] = {}
    async for d in _disputes(ctx).find({"record_id": {"$in": ids}}):
        if d["record_id"] not in latest or d["at"] >= latest[d["record_id"]]["at"]:
            latest[d["record_id"]] = d
    for record in mine.records:
        if d := latest.get(ObjectId(record.record_id)):
            record.dispute = hours.DisputeState(
                dispute_id=str(d["_id"]),
                status=d["status"],
                outcome=d.get("outcome"),
                reason=d.get("answer") or d["reason"],
            )
    return mine


async def staff_history(ctx, by: ObjectId, record_id) -> History:
    credit = await hours.staff_credit(ctx, by, record_id, "hours.read")
    return await _history(ctx, credit["_id"])


async def my_history(ctx, user_id: ObjectId, record_id) -> History:
    credit = await hours.own_credit(ctx, user_id, record_id)
    return await _history(ctx, credit["_id"])


async def _history(ctx, record_id: ObjectId) -> History:
    """Every change of the record, oldest first, from the ledger, its disputes and its
    adjustment requests."""
    entries = await hours.entries_of(ctx, record_id)
    credit, value = entries[0], entries[0]["hours"]
    steps: list[tuple[datetime, str, ObjectId | None, dict]] = [
        (credit["at"], "created", credit.get("by"), {"hours": value})
    ]
    if credit.get("confirmed_at"):
        steps.append((credit["confirmed_at"], "confirmed", credit.get("confirmed_by"), {}))
    for entry in entries[1:]:
        value = round(value + entry["hours"], 2)
        action = "reversed" if entry["kind"] == "reversal" else "adjusted"
        steps.append((entry["at"], action, entry.get("by"),
                      {"hours": value, "reason": entry.get("reason")}))  # fmt: skip
    async for d in _disputes(ctx).find({"record_id": record_id}):
        steps.append((d["at"], "disputed", d["user_id"], {"reason": d["reason"]}))
        if d["status"] == "resolved":
            steps.append((d["resolved_at"], "resolved", d["resolved_by"],
                          {"reason": d["answer"], "outcome": d["outcome"]}))  # fmt: skip
    for a in await adjustments.of_record(ctx, record_id):
        steps.append((a["requested_at"], "adjustment_requested", a.get("requested_by"),
                      {"hours": a["hours"], "reason": a["reason"]}))  # fmt: skip
        if a["status"] != "pending":
            steps.append((a["decided_at"], f"adjustment_{a['status']}", a["decided_by"],
                          {"hours": a["hours"], "reason": a.get("decision_reason")}))  # fmt: skip
    # At one moment a decision comes before the correction it makes.
    steps.sort(key=lambda s: (s[0], _ORDER.get(s[1], 4)))
    people = await identity.briefs(ctx, sorted({s[2] for s in steps if s[2]}))
    return History(
        record_id=str(record_id),
        items=[
            HistoryEntry(
                at=at,
                action=action,
                actor_id=str(actor) if actor else None,
                actor_name=hours.masked_name(people.get(actor, {}).get("real_name"))
                if actor
                else None,
                **what,
            )
            for at, action, actor, what in steps
        ],
    )
