"""The mini-program's listing of activities: near me, by dates, tag or organisation, page by page.

Reads the `activities` collection (server/domain/activities.py owns it) and writes nothing.
Nearest first pages by offset into the $geoNear results; every other order pages by sort key
(start time, then id), so a page never repeats or skips an activity published meanwhile.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from bson import ObjectId

from server import geo
from server.db import aggregate
from server.domain import orgs
from server.domain.activities import AwareDatetime, effective_status
from server.domain.errors import InvalidRequest
from server.domain.ids import parse_id
from server.domain.paging import DEFAULT_LIMIT, decode_cursor, encode_cursor

MAX_OFFSET = 100_000


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
    distance_km: float | None = None


class ActivityPage(msgspec.Struct):
    items: list[ActivityItem]
    next_cursor: str | None


class NearCursor(msgspec.Struct, forbid_unknown_fields=True):
    """Nearest first: how many results the next page skips."""

    o: Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET)]


class StartCursor(msgspec.Struct, forbid_unknown_fields=True):
    """By start time: the start time and id of the last activity shown."""

    s: AwareDatetime
    i: ObjectId


def _item_out(doc: dict, now: datetime) -> ActivityItem:
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
    """Published activities for the mini-program: by time, tag, organisation, or nearest first."""
    now = ctx.clock.now()
    query: dict = {"status": {"$in": ["published", "ongoing"]}, "ends_at": {"$gt": now}}
    if start:
        query["starts_at"] = {"$gte": start}
    if end:
        query.setdefault("starts_at", {})["$lt"] = end
    if tag:
        query["tags"] = tag
    if org_id:
        query["org_id"] = {"$in": await orgs.subtree_ids(ctx, parse_id(org_id, "org_id"))}
    coll = ctx.db["activities"]
    if near is not None:
        skip = decode_cursor(cursor, NearCursor)
        offset = skip.o if skip else 0
        try:
            lng, lat = geo.geojson_point(*near)["coordinates"]
            near = geo.to_wgs84(lng, lat, coord_type)
        except ValueError as exc:
            raise InvalidRequest(f"near: {exc}", field="near") from None
        docs = await aggregate(
            coll,
            [
                {
                    "$geoNear": {
                        "near": {"type": "Point", "coordinates": list(near)},
                        "distanceField": "distance_m",
                        "maxDistance": radius_km * 1000,
                        "query": query,
                        "spherical": True,
                    }
                },
                {"$skip": offset},
                {"$limit": limit + 1},
            ],
        )
        more = len(docs) > limit and offset + limit <= MAX_OFFSET
        following = NearCursor(o=offset + limit) if more else None
    else:
        if position := decode_cursor(cursor, StartCursor):
            query["$or"] = [
                {"starts_at": {"$gt": position.s}},
                {"starts_at": position.s, "_id": {"$gt": position.i}},
            ]
        docs = await coll.find(query).sort([("starts_at", 1), ("_id", 1)]).to_list(limit + 1)
        last = docs[limit - 1] if len(docs) > limit else None
        following = StartCursor(s=last["starts_at"], i=last["_id"]) if last else None
    return ActivityPage(
        items=[_item_out(d, now) for d in docs[:limit]],
        next_cursor=encode_cursor(following) if following else None,
    )
