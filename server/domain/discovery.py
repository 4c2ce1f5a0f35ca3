"""The mini-program's listing of activities: near me, by dates, tag or organisation, page by page.

Reads the `activities` collection (server/domain/activities.py owns it) and writes nothing. Which
activities a page holds, and in what order, the process's catalogue decides in memory
(server/domain/catalogue.py: the published, upcoming activities, refreshed by domain events and
a version document); the page is then built from those documents read by `_id`, so the counters
and status shown are what the database holds now. Nearest first orders by distance, then start
time and id, and pages by offset; every other order pages by sort key (start time, then id), so
a page never repeats or skips an activity published meanwhile.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from bson import ObjectId

from server import geo
from server.domain import sites
from server.domain.activities import AwareDatetime, effective_status
from server.domain.errors import InvalidRequest
from server.domain.ids import parse_id
from server.domain.paging import DEFAULT_LIMIT, decode_cursor, encode_cursor

MAX_OFFSET = 100_000
ATTEMPTS = 3
"""Picks made again when a document read disagrees with the catalogue (changed a moment ago)."""


class ActivityItem(msgspec.Struct, omit_defaults=True):
    id: str
    title: str
    status: str
    starts_at: datetime
    ends_at: datetime
    capacity: int
    confirmed_count: int
    waitlist_count: int
    tags: list[str] = []
    address: str | None = None
    location: dict | None = None  # GeoJSON point, in the page's coord_type
    distance_km: float | None = None


class ActivityPage(msgspec.Struct):
    items: list[ActivityItem]
    next_cursor: str | None
    coord_type: str = "wgs84"  # the system the items' locations are in


class NearCursor(msgspec.Struct, forbid_unknown_fields=True):
    """Nearest first: how many results the next page skips."""

    o: Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET)]


class StartCursor(msgspec.Struct, forbid_unknown_fields=True):
    """By start time: the start time and id of the last activity shown."""

    s: AwareDatetime
    i: ObjectId


def _item_out(doc: dict, now: datetime, coord_type: str) -> ActivityItem:
    distance = doc.get("distance_m")
    return ActivityItem(
        id=str(doc["_id"]),
        title=doc["title"],
        status=effective_status(doc, now),
        starts_at=doc["starts_at"],
        ends_at=doc["ends_at"],
        capacity=doc["capacity"],
        confirmed_count=doc["confirmed_count"],
        waitlist_count=doc["waitlist_count"],
        tags=doc.get("tags", []),
        address=doc.get("address"),
        location=sites.location_out(doc.get("location"), coord_type),
        distance_km=round(distance / 1000, 3) if distance is not None else None,
    )


async def discover(
    ctx,
    *,
    start: datetime | None,
    end: datetime | None,
    near: tuple[float, float] | None,
    coord_type: str = "wgs84",
    radius_km: float,
    tag: str | None,
    org_id: str | None,
    cursor: str | None,
    limit: int = DEFAULT_LIMIT,
) -> ActivityPage:
    """Published activities for the mini-program: by time, tag, organisation, or nearest first.
    `coord_type` is the system of `near` and of the locations shown."""
    now = ctx.clock.now()
    org = parse_id(org_id, "org_id") if org_id else None
    offset, after = 0, None
    if near is not None:
        skip = decode_cursor(cursor, NearCursor)
        offset = skip.o if skip else 0
        try:
            lng, lat = geo.wgs84_point(*near, coord_type)["coordinates"]
            near = (lng, lat)
        except ValueError as exc:
            raise InvalidRequest(f"near: {exc}", field="near") from None
    elif position := decode_cursor(cursor, StartCursor):
        after = (position.s, position.i)
    for attempt in range(ATTEMPTS):
        picks = await ctx.catalogue.pick(
            ctx, now=now, start=start, end=end, tag=tag, org=org, near=near,
            radius_m=radius_km * 1000, offset=offset, after=after, count=limit + 1,
        )  # fmt: skip
        wanted = {"_id": {"$in": [activity_id for activity_id, _ in picks]}}
        # Whole documents: the embedded server projects slower than it sends (8 vs 6 ms for 21).
        found = await ctx.db["activities"].find(wanted).to_list(None) if picks else []
        docs = {doc["_id"]: doc for doc in found}
        if attempt + 1 == ATTEMPTS or await ctx.catalogue.confirm(ctx, now, picks, docs):
            break
    page = [{**docs[i], "distance_m": d} for i, d in picks if i in docs]
    if near is not None:
        more = len(page) > limit and offset + limit <= MAX_OFFSET
        following = NearCursor(o=offset + limit) if more else None
    else:
        last = page[limit - 1] if len(page) > limit else None
        following = StartCursor(s=last["starts_at"], i=last["_id"]) if last else None
    return ActivityPage(
        items=[_item_out(d, now, coord_type) for d in page[:limit]],
        next_cursor=encode_cursor(following) if following else None,
        coord_type=coord_type,
    )
