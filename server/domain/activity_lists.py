"""The staff's listing of activities: an organiser's activities by status, tag, site and dates,
page by page.

Reads the `activities` collection (server/domain/activities.py owns it) and writes nothing.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from bson import ObjectId

from server.domain import orgs
from server.domain.activities import Activity, Status, activity_out
from server.domain.errors import InvalidRequest
from server.domain.ids import parse_id
from server.domain.paging import page_by_id


class ActivityList(msgspec.Struct):
    items: list[Activity]
    next_cursor: str | None


async def list_activities(
    ctx,
    org_ids: list[ObjectId],
    *,
    status: Status | None = None,
    tag: str | None = None,
    site_id: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    cursor: str | None = None,
    limit: int,
    coord_type: str = "wgs84",
) -> ActivityList:
    """Activities of these organisations, the latest created first; `start`/`end` bound their
    start time. The stored status is filtered on (the daily job moves it on with the clock).
    Locations are in `coord_type`, which each item names."""
    root = await orgs.root_org(ctx)
    # The province's whole tree needs no organisation filter, and the _id index alone serves it.
    query: dict = {} if root and root["_id"] in org_ids else {"org_id": {"$in": org_ids}}
    if status is not None:
        query["status"] = status
    if tag is not None:
        query["tags"] = tag
    if site_id is not None:
        query["site_id"] = parse_id(site_id, "site_id")
    if start is not None:
        query["starts_at"] = {"$gte": start}
    if end is not None:
        if start is not None and end < start:
            raise InvalidRequest("结束日期不能早于开始日期", field="to")
        query.setdefault("starts_at", {})["$lt"] = end
    docs, following = await page_by_id(
        ctx.db["activities"], query, cursor, limit, newest_first=True
    )
    now = ctx.clock.now()
    return ActivityList(
        items=[activity_out(d, now, coord_type) for d in docs], next_cursor=following
    )
