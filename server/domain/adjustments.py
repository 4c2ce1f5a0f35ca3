"""Adjustments of hours, bounded: a correction takes a credit to at most the activity's length
(a caravan crew's: the plan's duty day; the credit's own hours when it has no activity), never
below zero, always with a reason.
Anything beyond waits for a second staff member: a pending request that another holder of
`hours.confirm` where the credit lies approves (not the one who asked) or rejects. A record has
at most one pending request: asking the same again (a retry, a second click) is that request,
asking something else while it waits is refused.

Owns `hours_adjustments` (the requests above the bound and their decisions). The corrections
themselves are `hours` ledger entries, written when a change is within the bound or approved.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from server.domain import activities, caravans, hours, identity
from server.domain.errors import Conflict, Forbidden, NotFound
from server.domain.ids import parse_id
from server.domain.paging import DEFAULT_LIMIT, page_by_id_any
from server.domain.text import lines

Status = Literal["pending", "approved", "rejected"]


class AdjustmentOut(msgspec.Struct):
    adjustment_id: str
    record_id: str
    user_id: str
    volunteer_name: str
    activity_title: str | None
    hours: float  # what the record is to become
    bound: float  # the most it may be without a second approver
    reason: str
    status: Status
    requested_by: str | None
    requested_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None


class AdjustmentPage(msgspec.Struct):
    items: list[AdjustmentOut]
    next_cursor: str | None


class Rejection(msgspec.Struct, forbid_unknown_fields=True):
    reason: lines(500, 2)


def _requests(ctx):
    return ctx.db["hours_adjustments"]


async def bound_of(ctx, credit: dict) -> float:
    """The most a credit may be made without a second approver: its activity's length, or for
    a caravan visit's crew the plan's duty day if longer (their day is the drive there and
    back). Without an activity, what was credited: lowering it is always possible, raising it
    takes two."""
    if credit.get("activity_id"):
        try:
            doc = await activities.get_doc(ctx, credit["activity_id"])
        except NotFound:
            return credit["hours"]
        length = round((doc["ends_at"] - doc["starts_at"]).total_seconds() / 3600, 2)
        if activities.CARAVAN_TAG in doc.get("tags", ()):
            duty = await caravans.crew_duty_h(ctx, doc["_id"])
            return max(length, duty or 0.0)
        return length
    return credit["hours"]


async def adjust(
    ctx, by: ObjectId | None, record_id, change: hours.Adjustment, *, dispute_id=None
) -> hours.HoursRecord:
    """Make the correction when within the bound; otherwise leave a pending request for a
    second approver, named in the record's `pending_adjustment_id` (nothing changes yet)."""
    credit = await hours.staff_credit(ctx, by, record_id, "hours.confirm")
    bound = await bound_of(ctx, credit)
    if change.hours <= bound:
        return await hours.correct(ctx, by, credit, change, dispute_id=dispute_id)
    record = await hours.record_of(ctx, credit)
    record.pending_adjustment_id = str(await _pending(ctx, by, credit, change, bound, dispute_id))
    return record


async def _pending(ctx, by, credit: dict, change: hours.Adjustment, bound, dispute_id) -> ObjectId:
    """The record's one pending request: this one, new, or the same one asked before. Its
    `waiting_for` (the record's id, removed once decided) is unique, so of two asking at once
    one inserts and the other finds it."""
    try:
        inserted = await _requests(ctx).insert_one(
            {
                "record_id": credit["_id"],
                "user_id": credit["user_id"],
                "org_id": credit["org_id"],
                "site_id": credit.get("site_id"),
                "activity_id": credit.get("activity_id"),
                "hours": change.hours,
                "bound": bound,
                "reason": change.reason,
                "status": "pending",
                "requested_by": by,
                "requested_at": ctx.clock.now(),
                "dispute_id": dispute_id,
                "waiting_for": credit["_id"],
            }
        )
        return inserted.inserted_id
    except DuplicateKeyError:
        waiting = await _requests(ctx).find_one({"waiting_for": credit["_id"]})
    if waiting is None:  # decided between the insert and the read
        raise Conflict("该记录的更正申请刚被处理，请刷新后再提交", code="adjustment_decided")
    if (waiting["hours"], waiting["reason"]) != (change.hours, change.reason):
        raise Conflict(
            f"该记录已有一项待批准的更正（{waiting['hours']:g} 小时），请等它处理后再提交",
            code="adjustment_pending",
            field="hours",
        )
    return waiting["_id"]


async def _decide(ctx, by: ObjectId, adjustment_id, status: Status, reason: str | None) -> dict:
    """The request, once it is this caller's to decide and decided: 404, 403 (outside their
    scope, or their own request), 409 (decided already, by them or another at the same time)."""
    request = await _requests(ctx).find_one({"_id": parse_id(adjustment_id, "adjustment_id")})
    if request is None:
        raise NotFound("更正申请不存在", field="adjustment_id")
    await hours.staff_credit(ctx, by, request["record_id"], "hours.confirm")
    if request["requested_by"] == by:
        raise Forbidden("超出上限的更正须由另一名工作人员批准")
    decided = {"status": status, "decided_by": by, "decided_at": ctx.clock.now()}
    # Compare-and-set on the pending state: of two decisions at once, one holds.
    result = await _requests(ctx).update_one(
        {"_id": request["_id"], "status": "pending"},
        {"$set": {**decided, "decision_reason": reason}, "$unset": {"waiting_for": ""}},
    )
    if result.modified_count != 1:
        raise Conflict("该更正申请已处理", code="adjustment_decided")
    return {**request, **decided, "decision_reason": reason}


async def approve(ctx, by: ObjectId, adjustment_id) -> hours.HoursRecord:
    request = await _decide(ctx, by, adjustment_id, "approved", None)
    credit = await hours.staff_credit(ctx, None, request["record_id"], "hours.confirm")
    change = hours.Adjustment(hours=request["hours"], reason=request["reason"])
    return await hours.correct(
        ctx, request["requested_by"], credit, change,
        approved_by=by, adjustment_id=request["_id"], dispute_id=request.get("dispute_id"),
    )  # fmt: skip


async def reject(ctx, by: ObjectId, adjustment_id, rejection: Rejection) -> AdjustmentOut:
    request = await _decide(ctx, by, adjustment_id, "rejected", rejection.reason)
    [out] = await _out(ctx, [request])
    return out


async def _out(ctx, docs: list[dict]) -> list[AdjustmentOut]:
    people = await identity.briefs(ctx, sorted({d["user_id"] for d in docs}))
    titles = await activities.titles(
        ctx, sorted({d["activity_id"] for d in docs if d.get("activity_id")})
    )

    def text(value) -> str | None:
        return str(value) if value else None

    return [
        AdjustmentOut(
            adjustment_id=str(d["_id"]),
            record_id=str(d["record_id"]),
            user_id=str(d["user_id"]),
            volunteer_name=hours.masked_name(people.get(d["user_id"], {}).get("real_name")),
            activity_title=titles.get(d.get("activity_id")),
            hours=d["hours"],
            bound=d["bound"],
            reason=d["reason"],
            status=d["status"],
            requested_by=text(d.get("requested_by")),
            requested_at=d["requested_at"],
            decided_by=text(d.get("decided_by")),
            decided_at=d.get("decided_at"),
            decision_reason=d.get("decision_reason"),
        )
        for d in docs
    ]


async def list_requests(
    ctx,
    *,
    org_ids: list[ObjectId],
    site_ids: list[ObjectId],
    status: Status,
    cursor: str | None,
    limit: int = DEFAULT_LIMIT,
) -> AdjustmentPage:
    """The second approvers' queue: requests where the caller holds `hours.confirm`."""
    queries = [{"org_id": {"$in": org_ids}, "status": status}] if org_ids else []
    if site_ids:
        queries.append({"site_id": {"$in": site_ids}, "status": status})
    if not queries:
        return AdjustmentPage(items=[], next_cursor=None)
    docs, following = await page_by_id_any(_requests(ctx), queries, cursor, limit)
    return AdjustmentPage(items=await _out(ctx, docs), next_cursor=following)


async def of_record(ctx, record_id: ObjectId) -> list[dict]:
    """A record's requests, for its history."""
    return await _requests(ctx).find({"record_id": record_id}).to_list(None)
