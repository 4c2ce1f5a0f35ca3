"""The confirmation queue: pending credits in a staff member's scope, grouped by activity.

Owns nothing: the pending credits come from `hours.pending_in_scope`, the masked names and
phones beside each record from identity. The scope is the `hours.confirm` one: every
subtree in which the caller holds it, and the sites they were named admin of; what
`hours.confirm` then accepts, record by record, is the same rule.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from bson import ObjectId

from server.domain import access, activities, hours, identity

MAX_RECORDS = 2000  # the queue shown at once; a larger backlog is confirmed group by group


class PendingRecord(msgspec.Struct):
    record_id: str
    user_id: str
    name: str  # masked, as every list staff see
    phone_masked: str | None
    hours: float
    credited_at: datetime


class PendingGroup(msgspec.Struct):
    activity_id: str | None
    title: str
    hours: float
    oldest_at: datetime
    records: list[PendingRecord]


class Queue(msgspec.Struct):
    groups: list[PendingGroup]
    total: int  # pending records in scope; more than shown when above MAX_RECORDS


_FIELDS = {"activity_id": 1, "user_id": 1, "hours": 1, "at": 1}


async def queue(ctx, user_id: ObjectId) -> Queue:
    """The pending credits the caller may confirm, grouped by activity, the longest waiting
    group first and the records within it in the order they were credited."""
    org_ids = await access.scope(ctx, user_id, "hours.confirm")
    site_ids = await access.site_scope(ctx, user_id, "hours.confirm")
    credits = await hours.pending_in_scope(ctx, org_ids, site_ids, _FIELDS)
    ordered = sorted(credits, key=lambda c: (c["at"], c["_id"]))
    shown = ordered[:MAX_RECORDS]
    people = await identity.briefs(ctx, sorted({c["user_id"] for c in shown}))
    groups: dict[ObjectId | None, list[dict]] = {}
    for c in shown:
        groups.setdefault(c.get("activity_id"), []).append(c)
    titles = await activities.titles(ctx, [a for a in groups if a is not None])
    return Queue(
        groups=[
            PendingGroup(
                activity_id=str(a) if a else None,
                title=titles.get(a, "（无活动）"),
                hours=round(sum(c["hours"] for c in rows), 2),
                oldest_at=rows[0]["at"],
                records=[
                    PendingRecord(
                        record_id=str(c["_id"]),
                        user_id=str(c["user_id"]),
                        name=hours.masked_name(people.get(c["user_id"], {}).get("real_name")),
                        phone_masked=people.get(c["user_id"], {}).get("phone_masked"),
                        hours=round(c["hours"], 2),
                        credited_at=c["at"],
                    )
                    for c in rows
                ],
            )
            for a, rows in groups.items()  # insertion order: each group's oldest record first
        ],
        total=len(credits),
    )
