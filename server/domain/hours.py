"""The hours ledger: service hours as append-only entries, totals always derived from it.

Owns `hours_ledger`. A credit enters as pending; the site (or the organiser) confirms it, the
only change a credit itself ever sees. Every later correction is a new entry pointing at the
credit: an adjustment (with a reason) or a reversal. A credit's value is its hours plus its
corrections; a volunteer's total is the sum of those values. Whether a correction may be made
(its bound, a second approver) is `adjustments`'; disputes are `disputes`'.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from server.db import aggregate, in_transaction
from server.domain import access, activities, events, identity, sites
from server.domain.errors import Forbidden, InvalidRequest, NotFound
from server.domain.ids import parse_id
from server.domain.paging import DEFAULT_LIMIT, page_by_id
from server.domain.text import lines

Source = Literal["activity", "caravan"]


class DisputeState(msgspec.Struct):
    """A record's latest dispute as its volunteer sees it."""

    dispute_id: str
    status: Literal["open", "resolved"]
    outcome: Literal["upheld", "rejected"] | None
    reason: str | None  # the staff's answer once resolved, else what the volunteer wrote


class HoursRecord(msgspec.Struct):
    record_id: str
    user_id: str
    activity_id: str | None
    site_id: str | None
    hours: float
    status: str
    source: str
    credited_at: datetime
    activity_title: str | None = None
    volunteer_name: str | None = None  # masked (张**), on lists staff see
    dispute: DisputeState | None = None
    pending_adjustment_id: str | None = None  # set when a change waits for a second approver


class HoursPage(msgspec.Struct):
    items: list[HoursRecord]
    next_cursor: str | None


class MyHours(msgspec.Struct):
    confirmed_hours: float
    pending_hours: float
    star: int
    records: list[HoursRecord]


class Adjustment(msgspec.Struct, forbid_unknown_fields=True):
    hours: Annotated[float, msgspec.Meta(ge=0, le=24 * 31)]
    reason: lines(500, 2)


CONFIRM_ATTEMPTS = 3
"""Rounds of a bulk confirmation's transaction before a transient failure is the answer."""


def _ledger(ctx):
    return ctx.db["hours_ledger"]


def star_of(ctx, confirmed_hours: float) -> int:
    return sum(1 for threshold in ctx.settings.star_thresholds if confirmed_hours >= threshold)


async def credit(
    ctx,
    *,
    user_id: ObjectId,
    hours: float,
    org_id: ObjectId,
    source: Source,
    activity_id: ObjectId | None = None,
    site_id: ObjectId | None = None,
    served_at: datetime | None = None,
    basis: dict | None = None,
    by: ObjectId | None = None,
) -> ObjectId:
    """A pending credit. One credit per (user, activity): a repeat returns the existing one."""
    if hours <= 0:
        raise InvalidRequest("时长须大于 0", field="hours")
    doc = credit_doc(
        ctx,
        user_id=user_id,
        hours=hours,
        org_id=org_id,
        source=source,
        activity_id=activity_id,
        site_id=site_id,
        served_at=served_at,
        basis=basis,
        by=by,
    )
    # A lookup and an insert, not an upsert through findAndModify (which the embedded server
    # answers by scanning the ledger); the unique index on the key settles concurrent credits.
    key = {k: doc[k] for k in ("user_id", "activity_id", "kind")}
    existing = await _ledger(ctx).find_one(key, {"_id": 1})
    if existing is None:
        try:
            return (await _ledger(ctx).insert_one(doc)).inserted_id
        except DuplicateKeyError:
            existing = await _ledger(ctx).find_one(key, {"_id": 1})
    return existing["_id"]


def credit_doc(
    ctx,
    *,
    user_id: ObjectId,
    hours: float,
    org_id: ObjectId,
    source: Source,
    activity_id: ObjectId | None,
    site_id: ObjectId | None,
    served_at: datetime | None,
    basis: dict | None = None,
    by: ObjectId | None = None,
    status: Literal["pending", "confirmed"] = "pending",
) -> dict:
    """The one shape of a credit. `served_at` is when the service took place (the activity's
    start): statistics count the hours in that period, whenever they were credited."""
    now = ctx.clock.now()
    decided = {"confirmed_by": by, "confirmed_at": now} if status == "confirmed" else {}
    return {
        "user_id": user_id,
        "activity_id": activity_id,
        "kind": "credit",
        "hours": hours,
        "status": status,
        "org_id": org_id,
        "site_id": site_id,
        "source": source,
        "basis": basis or {},
        "by": by,
        "at": now,
        "served_at": served_at or now,
        **decided,
    }


async def import_credits(ctx, docs: list[dict]) -> int:
    """Bulk path for data loads: credits built by `credit_doc`, written in one call."""
    if not docs:
        return 0
    result = await _ledger(ctx).insert_many(docs, ordered=False)
    return len(result.inserted_ids)


async def _values(ctx, credits: list[dict]) -> dict[ObjectId, float]:
    """Each credit's current value: its hours plus every correction pointing at it. The
    corrections are one read on the `ref` index; an aggregate matching credits and corrections
    together needs an $or, which the embedded server answers by scanning the ledger."""
    values = {c["_id"]: c["hours"] for c in credits}
    if values:
        corrections = _ledger(ctx).find({"ref": {"$in": list(values)}}, {"ref": 1, "hours": 1})
        async for entry in corrections:
            values[entry["ref"]] += entry["hours"]
    return {credit_id: round(value, 2) for credit_id, value in values.items()}


# What a listed record shows: listing pages read no more of each credit (basis, who decided).
_RECORD_FIELDS = {
    f: 1 for f in ("user_id", "activity_id", "site_id", "hours", "status", "source", "at")
}


def masked_name(name: str | None) -> str:
    if not name:
        return "（未实名）"
    return name[0] + "*" * (len(name) - 1)


async def _records(ctx, credits: list[dict], *, names: bool = False) -> list[HoursRecord]:
    """The records as lists show them: values, activity titles and (`names`, for staff) the
    volunteers' masked names, each read once for the whole page."""
    values = await _values(ctx, credits)
    titles = await activities.titles(
        ctx, sorted({c["activity_id"] for c in credits if c.get("activity_id")})
    )
    people = await identity.briefs(ctx, sorted({c["user_id"] for c in credits})) if names else {}
    return [
        HoursRecord(
            record_id=str(c["_id"]),
            user_id=str(c["user_id"]),
            activity_id=str(c["activity_id"]) if c.get("activity_id") else None,
            site_id=str(c["site_id"]) if c.get("site_id") else None,
            hours=values.get(c["_id"], c["hours"]),
            status=c["status"],
            source=c["source"],
            credited_at=c["at"],
            activity_title=titles.get(c.get("activity_id")),
            volunteer_name=masked_name(people.get(c["user_id"], {}).get("real_name"))
            if names
            else None,
        )
        for c in credits
    ]


async def totals(ctx, user_id: ObjectId) -> tuple[float, float]:
    """(confirmed, pending) hours of a volunteer, summed from the ledger."""
    rows = await aggregate(
        _ledger(ctx),
        [
            {"$match": {"user_id": user_id}},
            {"$group": {"_id": "$status", "hours": {"$sum": "$hours"}}},
        ],
    )
    by_status = {row["_id"]: row["hours"] for row in rows}
    return round(by_status.get("confirmed", 0.0), 2), round(by_status.get("pending", 0.0), 2)


async def my_hours(ctx, user_id: ObjectId) -> MyHours:
    confirmed, pending = await totals(ctx, user_id)
    credits = (
        await _ledger(ctx)
        .find({"user_id": user_id, "kind": "credit"}, _RECORD_FIELDS)
        .sort([("at", -1)])
        .to_list(200)
    )
    return MyHours(
        confirmed_hours=confirmed,
        pending_hours=pending,
        star=star_of(ctx, confirmed),
        records=await _records(ctx, credits),
    )


async def confirm(ctx, by: ObjectId, record_ids: list[str]) -> int:
    """Confirm pending credits in one call (a whole roster). All or nothing on permission;
    already confirmed ones are skipped, so a repeat or a concurrent confirmation counts once."""
    ids = list(dict.fromkeys(parse_id(r, "record_ids") for r in record_ids))
    credits = await _ledger(ctx).find({"_id": {"$in": ids}, "kind": "credit"}).to_list(None)
    if len(credits) != len(ids):
        raise NotFound("部分时长记录不存在", field="record_ids")
    checked: dict[tuple, bool] = {}
    for c in credits:
        scope = (c.get("site_id"), c["org_id"])
        if scope not in checked:
            checked[scope] = await may_on(ctx, by, "hours.confirm", c)
        if not checked[scope]:
            raise Forbidden("只有站点管理员或活动组织方可以确认时长")
    now = ctx.clock.now()
    # The token tells which credits this call confirmed when others confirm the same ones at
    # once: each credit is announced exactly once, so the statistics count it once.
    token = ObjectId()
    confirming = {"status": "confirmed", "confirmed_by": by, "confirmed_at": now}

    # One transaction: a credit and the corrections made while it was pending (which follow it
    # into the confirmed total) are confirmed together or not at all. A write conflict (another
    # confirmation of the same records got there first) runs it again on what is left.
    async def confirm_pending(session):
        await _ledger(ctx).update_many(
            {"ref": {"$in": ids}, "status": "pending"},
            {"$set": {"status": "confirmed"}},
            session=session,
        )
        return await _ledger(ctx).update_many(
            {"_id": {"$in": ids}, "status": "pending"},
            {"$set": {**confirming, "confirmation": token}},
            session=session,
        )

    result = await in_transaction(ctx.client, confirm_pending, attempts=CONFIRM_ATTEMPTS)
    if result.modified_count:
        mine = (
            await _ledger(ctx)
            .find({"_id": {"$in": ids}, "confirmation": token}, {"user_id": 1})
            .to_list(None)
        )
        users = sorted({c["user_id"] for c in mine})
        await events.emit(
            ctx, events.HOURS_CONFIRMED, user_ids=users, record_ids=[c["_id"] for c in mine]
        )
    return result.modified_count


async def may_on(ctx, user_id: ObjectId | None, permission: str, credit: dict) -> bool:
    """Whether the user may do `permission` on this credit: at its site, or in the organisation
    that ran it. None is the service itself."""
    if user_id is None:
        return True
    if credit.get("site_id"):
        site = await sites.get_site_doc(ctx, credit["site_id"])
        if await access.may(ctx, user_id, permission, site=site):
            return True
    return await access.may(ctx, user_id, permission, org_id=credit["org_id"])


async def staff_credit(ctx, by: ObjectId | None, record_id, permission: str) -> dict:
    """The credit, if the caller may do `permission` on it (404, then 403)."""
    record_id = parse_id(record_id, "record_id")
    credit = await _ledger(ctx).find_one({"_id": record_id, "kind": "credit"})
    if credit is None:
        raise NotFound("时长记录不存在", field="record_id")
    if not await may_on(ctx, by, permission, credit):
        raise Forbidden("只有站点管理员或活动组织方可以处理该时长记录")
    return credit


async def own_credit(ctx, user_id: ObjectId, record_id) -> dict:
    record_id = parse_id(record_id, "record_id")
    credit = await _ledger(ctx).find_one({"_id": record_id, "kind": "credit", "user_id": user_id})
    if credit is None:
        raise NotFound("时长记录不存在", field="record_id")
    return credit


async def value_of(ctx, credit: dict) -> float:
    return (await _values(ctx, [credit]))[credit["_id"]]


async def record_of(ctx, credit: dict) -> HoursRecord:
    [record] = await _records(ctx, [credit])
    return record


async def correct(ctx, by: ObjectId | None, credit: dict, change: Adjustment, **why) -> HoursRecord:
    """Set a credit to a new value through a new entry; the credit itself stays as it was.
    Unchecked: `adjustments` decides whether the change may be made (its bound, a second
    approver) and passes who approved it and the dispute it answers in `why`."""
    current = await value_of(ctx, credit)
    delta = round(change.hours - current, 2)
    if delta:
        await _ledger(ctx).insert_one(
            {
                "kind": "reversal" if change.hours == 0 else "adjustment",
                "ref": credit["_id"],
                "user_id": credit["user_id"],
                "org_id": credit["org_id"],
                "site_id": credit.get("site_id"),
                "activity_id": credit.get("activity_id"),
                "source": credit["source"],
                "hours": delta,
                "status": credit["status"],
                "reason": change.reason,
                "by": by,
                "at": ctx.clock.now(),
                "served_at": credit.get("served_at", credit["at"]),
                **{k: v for k, v in why.items() if v is not None},
            }
        )
        if credit["status"] == "confirmed":
            await events.emit(ctx, events.HOURS_ADJUSTED, record_id=credit["_id"], delta=delta)
    return await record_of(ctx, credit)


async def entries_of(ctx, record_id: ObjectId) -> list[dict]:
    """A credit and every correction pointing at it, oldest first: its part of the trail."""
    credit = await _ledger(ctx).find_one({"_id": record_id, "kind": "credit"})
    if credit is None:
        raise NotFound("时长记录不存在", field="record_id")
    corrections = await _ledger(ctx).find({"ref": record_id}).to_list(None)
    return [credit, *sorted(corrections, key=lambda e: (e["at"], e["_id"]))]


async def site_records(
    ctx, site_id, status: str | None, cursor: str | None, limit: int = DEFAULT_LIMIT
) -> HoursPage:
    query: dict = {"site_id": parse_id(site_id, "site_id"), "kind": "credit"}
    if status:
        query["status"] = status
    credits, following = await page_by_id(
        _ledger(ctx), query, cursor, limit, projection=_RECORD_FIELDS
    )
    return HoursPage(items=await _records(ctx, credits, names=True), next_cursor=following)


async def confirmed_credits(ctx, user_id: ObjectId) -> list[HoursRecord]:
    credits = (
        await _ledger(ctx)
        .find({"user_id": user_id, "kind": "credit", "status": "confirmed"})
        .sort([("at", 1)])
        .to_list(None)
    )
    return [r for r in await _records(ctx, credits) if r.hours > 0]


class CreditValue(msgspec.Struct, frozen=True):
    """What statistics need of a confirmed credit: who, where, when served, and its value."""

    user_id: ObjectId
    org_id: ObjectId
    served_at: datetime
    hours: float


async def credit_values(ctx, record_ids: list[ObjectId]) -> list[CreditValue]:
    credits = (
        await _ledger(ctx)
        .find(
            {"_id": {"$in": record_ids}, "kind": "credit"},
            {"user_id": 1, "org_id": 1, "served_at": 1, "at": 1, "hours": 1},
        )
        .to_list(None)
    )
    values = await _values(ctx, credits)
    return [
        CreditValue(
            user_id=c["user_id"],
            org_id=c["org_id"],
            served_at=c.get("served_at", c["at"]),
            hours=values.get(c["_id"], 0.0),
        )
        for c in credits
    ]


async def confirmed_served(
    ctx, org_ids: list[ObjectId], start: datetime, end: datetime
) -> list[tuple[dict, float]]:
    """The confirmed credits of these organisations served in [start, end) that still count
    (a reversed one is worth nothing), each with its value, in the order served. Each credit
    as stored: who, activity, site, organisation, `served_at`, `basis`, `confirmed_at`."""
    query = {"org_id": {"$in": org_ids}, "status": "confirmed", "kind": "credit",
             "served_at": {"$gte": start, "$lt": end}}  # fmt: skip
    credits = sorted(
        await _ledger(ctx).find(query).to_list(None), key=lambda c: (c["served_at"], c["_id"])
    )
    values = await _values(ctx, credits)
    return [(c, values[c["_id"]]) for c in credits if values[c["_id"]] > 0]


async def confirmed_entries(ctx, start: datetime, end: datetime):
    """Every confirmed ledger entry (credits and their corrections) served in [start, end), as
    CreditValues, streamed: at provincial scale this is the whole year's ledger. No index: a
    recount reads nearly all of it, and a plain scan is faster than fetching entry by entry."""
    query = {"status": "confirmed", "served_at": {"$gte": start, "$lt": end}}
    fields = {"_id": 0, "user_id": 1, "org_id": 1, "served_at": 1, "hours": 1}
    async for entry in _ledger(ctx).find(query, fields, batch_size=10_000):
        yield CreditValue(**entry)


async def pending_by_site(ctx, older_than: datetime) -> list[tuple[ObjectId, int]]:
    """Sites with credits waiting for confirmation since before `older_than`."""
    rows = await aggregate(
        _ledger(ctx),
        [
            {"$match": {"kind": "credit", "status": "pending", "at": {"$lt": older_than}}},
            {"$match": {"site_id": {"$ne": None}}},
            {"$group": {"_id": "$site_id", "n": {"$sum": 1}}},
        ],
    )
    return [(row["_id"], row["n"]) for row in rows]


async def pending_in_scope(
    ctx, org_ids: list[ObjectId], site_ids: list[ObjectId], fields: dict
) -> list[dict]:
    """The credits waiting for confirmation in these organisations and at these sites (`fields`
    of each, with `_id`), by the two indexed reads an `$or` would have been (it scans here)."""
    pending = {"kind": "credit", "status": "pending"}
    queries = [{"org_id": {"$in": org_ids}, **pending}] if org_ids else []
    if site_ids:
        queries.append({"site_id": {"$in": site_ids}, **pending})
    found: dict[ObjectId, dict] = {}
    for query in queries:
        async for credit in _ledger(ctx).find(query, fields):
            found[credit["_id"]] = credit
    return list(found.values())
