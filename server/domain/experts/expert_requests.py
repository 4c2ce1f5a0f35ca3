"""Expert requests: a county asks for an expert in its fields on the dates it prefers, for an
audience at a place. Owns the `expert_requests` collection.

A request moves open → scheduled (with its expert, date, activity and match: see publishing).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Literal

import msgspec
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from server.domain import orgs, sites
from server.domain.errors import InvalidRequest
from server.domain.experts.registry import Field, iso_days
from server.domain.ids import fetch, parse_id
from server.domain.paging import page_by_id
from server.domain.text import HHMM, line

RequestStatus = Literal["open", "scheduled"]


class NewExpertRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A county asks for an expert: `org_id` is the county's organisation, `dates` the days it
    would take one (each after today), `audience` who will listen, `place` where. The visit
    starts at `start_time` (Asia/Shanghai) and lasts `duration_min`."""

    org_id: str
    fields: Annotated[list[Field], msgspec.Meta(min_length=1, max_length=3)]
    dates: Annotated[list[date], msgspec.Meta(min_length=1, max_length=20)]
    audience: line(100)
    place: line(60)
    location: sites.LocationIn
    address: line(200, 0) | None = None
    topic: line(40) | None = None
    audience_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 100
    start_time: HHMM = "09:00"
    duration_min: Annotated[int, msgspec.Meta(ge=30, le=480)] = 120


class ExpertRequestOut(msgspec.Struct):
    id: str
    org_id: str
    fields: list[str]
    dates: list[str]
    audience: str
    audience_size: int
    place: str
    location: dict
    address: str | None
    topic: str | None
    start_time: str
    duration_min: int
    status: str
    expert_id: str | None
    date: str | None
    activity_id: str | None
    match_id: str | None
    created_at: datetime


class ExpertRequestPage(msgspec.Struct):
    items: list[ExpertRequestOut]
    next_cursor: str | None


def str_or_none(value) -> str | None:
    return str(value) if value is not None else None


def _request_out(doc: dict) -> ExpertRequestOut:
    return ExpertRequestOut(
        id=str(doc["_id"]),
        org_id=str(doc["org_id"]),
        fields=doc["fields"],
        dates=doc["dates"],
        audience=doc["audience"],
        audience_size=doc["audience_size"],
        place=doc["place"],
        location=doc["location"],
        address=doc.get("address"),
        topic=doc.get("topic"),
        start_time=doc["start_time"],
        duration_min=doc["duration_min"],
        status=doc["status"],
        expert_id=str_or_none(doc.get("expert_id")),
        date=doc.get("date"),
        activity_id=str_or_none(doc.get("activity_id")),
        match_id=str_or_none(doc.get("match_id")),
        created_at=doc["created_at"],
    )


def _text(value: str, field: str) -> str:
    if not value.strip():
        raise InvalidRequest(f"{field} 不能为空", field=field)
    return value.strip()


async def create_request(ctx, new: NewExpertRequest, *, by: ObjectId | None) -> ObjectId:
    county = await orgs.get_org(ctx, parse_id(new.org_id, "org_id"))
    if county["kind"] != "county":
        raise InvalidRequest("专家需求须由县级组织提出", field="org_id")
    today = ctx.clock.local_now().date()
    for i, day in enumerate(new.dates):
        if day <= today:
            raise InvalidRequest("期望日期须晚于今天", field=f"dates[{i}]")
    doc = {
        "_id": ObjectId(),
        "org_id": county["_id"],
        "fields": list(dict.fromkeys(new.fields)),
        "dates": iso_days(new.dates),
        "audience": _text(new.audience, "audience"),
        "audience_size": new.audience_size,
        "place": _text(new.place, "place"),
        "location": new.location.to_geojson(),
        "address": new.address,
        "topic": new.topic,
        "start_time": new.start_time,
        "duration_min": new.duration_min,
        "status": "open",
        "created_by": by,
        "created_at": ctx.clock.now(),
    }
    await ctx.db["expert_requests"].insert_one(doc)
    return doc["_id"]


async def list_requests(
    ctx, org_ids: list[ObjectId], status: str | None, cursor: str | None, limit: int
) -> ExpertRequestPage:
    query: dict = {"org_id": {"$in": org_ids}}
    if status is not None:
        query["status"] = status
    docs, following = await page_by_id(ctx.db["expert_requests"], query, cursor, limit)
    return ExpertRequestPage(items=[_request_out(d) for d in docs], next_cursor=following)


async def get_request_doc(ctx, request_id) -> dict:
    return await fetch(ctx.db["expert_requests"], request_id, "request_id", "专家需求不存在")


async def open_requests(ctx) -> list[dict]:
    return await ctx.db["expert_requests"].find({"status": "open"}).to_list(None)


def month_bounds(first: date, last: date) -> tuple[str, str]:
    """The first day of `first`'s month and the last day of `last`'s, as ISO dates."""
    after = date(last.year + last.month // 12, last.month % 12 + 1, 1)
    return first.replace(day=1).isoformat(), (after - timedelta(days=1)).isoformat()


async def visit_days(ctx, first: date, last: date) -> dict[ObjectId, set[date]]:
    """The days of each expert's published visits in the months from `first` to `last`."""
    start, end = month_bounds(first, last)
    visits = ctx.db["expert_requests"].find(
        {"status": "scheduled", "date": {"$gte": start, "$lte": end}},
        {"expert_id": 1, "date": 1},
    )
    days: dict[ObjectId, set[date]] = {}
    async for visit in visits:
        days.setdefault(visit["expert_id"], set()).add(date.fromisoformat(visit["date"]))
    return days


async def visits_in_month(ctx, expert_id: ObjectId, day: date) -> int:
    start, end = month_bounds(day, day)
    return await ctx.db["expert_requests"].count_documents(
        {"expert_id": expert_id, "status": "scheduled", "date": {"$gte": start, "$lte": end}}
    )


TAKEN_BY_OTHERS = "request_taken"
EXPERT_BUSY = "expert_busy"  # the matcher's word for it (expert_matching.EXPERT_BUSY)


async def scheduled_by(ctx, request_id: ObjectId, match_id: ObjectId) -> dict | None:
    """The request, when this match's publication already took it."""
    return await ctx.db["expert_requests"].find_one(
        {"_id": request_id, "status": "scheduled", "match_id": match_id}
    )


async def take(ctx, request_id: ObjectId, *, expert_id, day: str, match_id) -> str | None:
    """Schedule an open request for this expert and day; why not, when it cannot be (the
    unique (expert, date) index refuses a second visit of the expert that day)."""
    taken = {"status": "scheduled", "expert_id": expert_id, "date": day, "match_id": match_id}
    try:
        result = await ctx.db["expert_requests"].update_one(
            {"_id": request_id, "status": "open"}, {"$set": taken}
        )
    except DuplicateKeyError:
        return EXPERT_BUSY
    return None if result.matched_count else TAKEN_BY_OTHERS


async def give_back(ctx, request_id: ObjectId, match_id: ObjectId) -> None:
    await ctx.db["expert_requests"].update_one(
        {"_id": request_id, "status": "scheduled", "match_id": match_id},
        {"$set": {"status": "open"}, "$unset": {"expert_id": "", "date": "", "match_id": ""}},
    )


async def record_activity(ctx, request_id: ObjectId, activity_id: ObjectId) -> None:
    await ctx.db["expert_requests"].update_one(
        {"_id": request_id}, {"$set": {"activity_id": activity_id}}
    )
