"""Matches: the association's proposal of experts for the open requests of a period (the
optimum of `expert_matching`, computed in the executor) and the swaps it makes before publishing
(each checked against the same rules). Owns the `expert_matches` collection."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import msgspec
from bson import ObjectId

from server.domain import expert_matching
from server.domain.errors import Conflict, InvalidRequest
from server.domain.experts.expert_requests import (
    TAKEN_BY_OTHERS,
    get_request_doc,
    open_requests,
    visit_days,
)
from server.domain.experts.registry import active_experts, expert_names, get_expert_doc
from server.domain.ids import fetch, parse_id

MAX_MATCH_DAYS = 92
UNMATCHED_DETAIL = {
    expert_matching.NO_EXPERT_IN_FIELD: "没有该领域的专家",
    expert_matching.NO_FREE_EXPERT: "该领域专家在期望日期都没有空",
    expert_matching.MONTHLY_LIMIT: "该领域有空的专家当月派出次数已满",
    expert_matching.TAKEN: "该领域有空的专家已派往其他需求",
}


class NewMatch(msgspec.Struct, forbid_unknown_fields=True):
    """Match the open requests over these dates (at most 92 days; only days after today)."""

    from_: date = msgspec.field(name="from")
    to: date


class Swap(msgspec.Struct, forbid_unknown_fields=True):
    """Give `request_id` to `expert_id` (a request left unmatched too), on `date`: by default
    the request's date in the proposal, else the first date both the request and the expert
    can do."""

    request_id: str
    expert_id: str
    # Named apart from the type: a Struct's field shadows a module name in its annotations.
    day: date | None = msgspec.field(default=None, name="date")


class AssignmentOut(msgspec.Struct):
    request_id: str
    expert_id: str
    expert_name: str
    date: str
    fit: int
    travel_km: float


class UnmatchedOut(msgspec.Struct):
    request_id: str
    reason: str
    detail: str


class PublishedVisit(msgspec.Struct):
    request_id: str
    activity_id: str


class MatchOut(msgspec.Struct):
    """A proposal (`proposed`), or what was published of it (`published`, with the activities
    made and the visits skipped because something changed since the proposal)."""

    id: str
    status: str
    from_: str = msgspec.field(name="from")
    to: str
    matched: int
    fit: int
    travel_km: float
    assignments: list[AssignmentOut]
    unmatched: list[UnmatchedOut]
    published: list[PublishedVisit]
    skipped: list[UnmatchedOut]
    created_at: datetime


SKIPPED_DETAIL = {
    TAKEN_BY_OTHERS: "该需求已由其他匹配安排",
    expert_matching.EXPERT_BUSY: "该专家当天已有其他派遣",
    expert_matching.EXPERT_UNAVAILABLE: "该专家已取消当天的空闲",
    expert_matching.MONTHLY_LIMIT: "该专家当月派出次数已满",
}


async def _expert_slots(ctx, docs: list[dict], first: date, last: date) -> list:
    """The experts as the matcher sees them over these months: the days of their published
    visits no longer free, those visits counted against their months."""
    busy = await visit_days(ctx, first, last)
    slots = []
    for doc in docs:
        taken = busy.get(doc["_id"], set())
        booked: dict = {}
        for day in taken:
            month = expert_matching.month_of(day)
            booked[month] = booked.get(month, 0) + 1
        slots.append(
            expert_matching.ExpertSlot(
                id=str(doc["_id"]),
                fields=frozenset(doc["fields"]),
                free=frozenset(date.fromisoformat(d) for d in doc["free_dates"]) - taken,
                home=tuple(doc["home"]["coordinates"]),
                booked=booked,
            )
        )
    return slots


def _request_slot(doc: dict, first: date, last: date):
    days = {date.fromisoformat(d) for d in doc["dates"]}
    return expert_matching.RequestSlot(
        id=str(doc["_id"]),
        fields=frozenset(doc["fields"]),
        dates=frozenset(d for d in days if first <= d <= last),
        place=tuple(doc["location"]["coordinates"]),
    )


def _window(ctx, start: date, end: date) -> tuple[date, date]:
    if end < start:
        raise InvalidRequest("结束日期不能早于开始日期", field="to")
    if (end - start).days >= MAX_MATCH_DAYS:
        raise InvalidRequest(f"一次匹配最多 {MAX_MATCH_DAYS} 天", field="to")
    first = max(start, ctx.clock.local_now().date() + timedelta(days=1))
    if end < first:
        raise InvalidRequest("匹配的日期须晚于今天", field="to")
    return first, end


async def propose(ctx, new: NewMatch, *, by: ObjectId | None) -> MatchOut:
    """A proposal for the open requests that prefer a date in the period: the best matching of
    the experts free then (see `expert_matching`)."""
    first, last = _window(ctx, new.from_, new.to)
    requests = [_request_slot(doc, first, last) for doc in await open_requests(ctx)]
    wanted = [slot for slot in requests if slot.dates]
    slots = await _expert_slots(ctx, await active_experts(ctx), first, last)
    limit = ctx.settings.expert_visits_per_month
    matching = await ctx.run_blocking(expert_matching.match, slots, wanted, limit)
    doc = {
        "_id": ObjectId(),
        "status": "proposed",
        "from": first.isoformat(),
        "to": last.isoformat(),
        "request_ids": [ObjectId(r.id) for r in wanted],
        "assignments": [_assignment_doc(a) for a in matching.assignments],
        "unmatched": [
            {"request_id": ObjectId(rid), "reason": reason}
            for rid, reason in matching.unmatched.items()
        ],
        "version": 0,
        "created_by": by,
        "created_at": ctx.clock.now(),
    }
    await ctx.db["expert_matches"].insert_one(doc)
    return await match_out(ctx, doc)


def _assignment_doc(a) -> dict:
    return {
        "request_id": ObjectId(a.request_id),
        "expert_id": ObjectId(a.expert_id),
        "date": a.date.isoformat(),
        "fit": a.fit,
        "travel_m": a.travel_m,
    }


def _assignment(doc: dict):
    return expert_matching.Assignment(
        request_id=str(doc["request_id"]),
        expert_id=str(doc["expert_id"]),
        date=date.fromisoformat(doc["date"]),
        fit=doc["fit"],
        travel_m=doc["travel_m"],
    )


async def match_out(ctx, doc: dict) -> MatchOut:
    names = await expert_names(ctx, sorted({a["expert_id"] for a in doc["assignments"]}))
    matched, fit, travel = expert_matching.objective(_assignment(a) for a in doc["assignments"])
    return MatchOut(
        id=str(doc["_id"]),
        status=doc["status"],
        from_=doc["from"],
        to=doc["to"],
        matched=matched,
        fit=fit,
        travel_km=round(-travel / 1000, 1),
        assignments=[
            AssignmentOut(
                request_id=str(a["request_id"]),
                expert_id=str(a["expert_id"]),
                expert_name=names.get(a["expert_id"], ""),
                date=a["date"],
                fit=a["fit"],
                travel_km=round(a["travel_m"] / 1000, 1),
            )
            for a in doc["assignments"]
        ],
        unmatched=[_reason_out(u, UNMATCHED_DETAIL) for u in doc["unmatched"]],
        published=[
            PublishedVisit(request_id=str(p["request_id"]), activity_id=str(p["activity_id"]))
            for p in doc.get("published", [])
        ],
        skipped=[_reason_out(s, SKIPPED_DETAIL) for s in doc.get("skipped", [])],
        created_at=doc["created_at"],
    )


def _reason_out(doc: dict, details: dict[str, str]) -> UnmatchedOut:
    return UnmatchedOut(
        request_id=str(doc["request_id"]), reason=doc["reason"], detail=details[doc["reason"]]
    )


async def match_doc(ctx, match_id) -> dict:
    return await fetch(ctx.db["expert_matches"], match_id, "match_id", "匹配方案不存在")


async def get_match(ctx, match_id) -> MatchOut:
    return await match_out(ctx, await match_doc(ctx, match_id))


SWAP_REFUSED = {
    expert_matching.FIELD_MISMATCH: "该专家的领域与需求不符",
    expert_matching.EXPERT_UNAVAILABLE: "该专家当天没有空",
    expert_matching.EXPERT_BUSY: "该专家当天已安排其他需求",
}


async def swap(ctx, match_id, change: Swap) -> MatchOut:
    """Give one request of a proposal to another expert (or to one at all), on a date both can
    do, within the expert's monthly limit; 409 with the reason otherwise."""
    match = await match_doc(ctx, match_id)
    if match["status"] != "proposed":
        raise Conflict("匹配方案已发布，不能再调整", code="match_published")
    request_id = parse_id(change.request_id, "request_id")
    if request_id not in match["request_ids"]:
        raise InvalidRequest("该需求不在本匹配方案中", field="request_id")
    request_doc = await get_request_doc(ctx, request_id)
    if request_doc["status"] != "open":
        raise Conflict("该需求已由其他匹配安排", code=TAKEN_BY_OTHERS, field="request_id")
    expert_doc = await get_expert_doc(ctx, change.expert_id)
    first, last = date.fromisoformat(match["from"]), date.fromisoformat(match["to"])
    [expert] = await _expert_slots(ctx, [expert_doc], first, last)
    request = _request_slot(request_doc, first, last)
    held = [_assignment(a) for a in match["assignments"]]
    limit = ctx.settings.expert_visits_per_month
    day = change.day or _day_for(held, expert, request, limit)
    if (refused := expert_matching.refusal(held, expert, request, day, limit)) is not None:
        if refused == expert_matching.DATE_NOT_PREFERRED:
            raise InvalidRequest("该日期不是需求方期望的日期（或不在本方案的日期内）", field="date")
        if refused == expert_matching.MONTHLY_LIMIT:
            raise Conflict(
                f"该专家当月已派出 {limit} 次，达到每月上限", code="monthly_limit", field="date"
            )
        raise Conflict(SWAP_REFUSED[refused], code=refused, field="expert_id")
    chosen = expert_matching.Assignment(
        request.id,
        expert.id,
        day,
        expert_matching.fit(expert, request),
        expert_matching.travel_m(expert, request),
    )
    assignments = [a for a in match["assignments"] if a["request_id"] != request_id]
    assignments = sorted(
        [*assignments, _assignment_doc(chosen)], key=lambda a: (a["date"], str(a["request_id"]))
    )
    unmatched = [u for u in match["unmatched"] if u["request_id"] != request_id]
    # Compare-and-set on the version read: two swaps at once cannot both pass their checks
    # against the same proposal.
    result = await ctx.db["expert_matches"].update_one(
        {"_id": match["_id"], "status": "proposed", "version": match["version"]},
        {"$set": {"assignments": assignments, "unmatched": unmatched}, "$inc": {"version": 1}},
    )
    if not result.matched_count:
        raise Conflict("匹配方案刚被修改或发布，请刷新后重试", code="match_busy")
    return await get_match(ctx, match["_id"])


def _day_for(held, expert, request, limit: int) -> date:
    """The request's date in the proposal if `expert` can do it, else the first date they can;
    when none, the first of those (whose refusal then says why)."""
    current = [a.date for a in held if a.request_id == request.id]
    candidates = [*current, *sorted(request.dates)]
    for day in candidates:
        if expert_matching.refusal(held, expert, request, day, limit) is None:
            return day
    if not candidates:
        raise InvalidRequest("该需求在本方案的日期内没有期望日期", field="request_id")
    return candidates[0]
