"""Who has signed up: an activity's roster (and its workbook) for organisers, and a volunteer's
own sign-ups, newest first.

Reads the `signups` collection (server/domain/signups.py owns it), with the `activities` titles
and the `users` names and masked phone numbers beside it; writes nothing.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from bson import ObjectId

from server.domain import activities, identity
from server.domain.ids import parse_id
from server.domain.paging import DEFAULT_LIMIT, page_by_id
from server.domain.signups import ACTIVE, waitlist_position
from server.spreadsheets import Sheet, workbook


class MySignup(msgspec.Struct, omit_defaults=True):
    id: str
    activity_id: str
    title: str
    starts_at: datetime
    ends_at: datetime
    status: str
    waitlist_position: int | None = None


class MySignupPage(msgspec.Struct):
    items: list[MySignup]
    next_cursor: str | None


class RosterEntry(msgspec.Struct, omit_defaults=True):
    user_id: str
    real_name: str | None = None
    phone_masked: str | None = None
    signed_up_at: datetime | None = None


class WaitlistEntry(msgspec.Struct, omit_defaults=True):
    user_id: str
    position: int
    real_name: str | None = None


class Roster(msgspec.Struct):
    confirmed: list[RosterEntry]
    waitlist: list[WaitlistEntry]
    pending: list[RosterEntry]


async def roster(ctx, activity_id) -> Roster:
    activity_id = parse_id(activity_id, "activity_id")
    records = (
        await ctx.db["signups"]
        .find({"activity_id": activity_id, "status": {"$in": list(ACTIVE)}})
        .sort([("seq", 1), ("created_at", 1)])
        .to_list(None)
    )
    people = await identity.briefs(ctx, [r["user_id"] for r in records])

    def entry(r: dict) -> RosterEntry:
        brief = people.get(r["user_id"], {})
        return RosterEntry(
            user_id=str(r["user_id"]),
            real_name=brief.get("real_name"),
            phone_masked=brief.get("phone_masked"),
            signed_up_at=r["created_at"],
        )

    waiting = [r for r in records if r["status"] == "waitlisted"]
    return Roster(
        confirmed=[entry(r) for r in records if r["status"] == "confirmed"],
        waitlist=[
            WaitlistEntry(
                user_id=str(r["user_id"]),
                position=i,
                real_name=people.get(r["user_id"], {}).get("real_name"),
            )
            for i, r in enumerate(waiting, start=1)
        ],
        pending=[entry(r) for r in records if r["status"] == "pending"],
    )


async def my_signups(ctx, user_id: ObjectId, cursor: str | None, limit: int = DEFAULT_LIMIT):
    records, following = await page_by_id(
        ctx.db["signups"], {"user_id": user_id}, cursor, limit, newest_first=True
    )
    titles = await activities.titles(ctx, [r["activity_id"] for r in records])
    items = [
        MySignup(
            id=str(r["_id"]),
            activity_id=str(r["activity_id"]),
            title=titles.get(r["activity_id"], ""),
            starts_at=r["starts_at"],
            ends_at=r["ends_at"],
            status=r["status"],
            waitlist_position=await waitlist_position(ctx, r)
            if r["status"] == "waitlisted"
            else None,
        )
        for r in records
    ]
    return MySignupPage(items=items, next_cursor=following)


async def roster_workbook(ctx, activity_id) -> bytes:
    """The roster as an .xlsx file (built in an executor)."""
    current = await roster(ctx, activity_id)
    title = (await activities.get_doc(ctx, activity_id))["title"]
    confirmed = Sheet(
        "已确认",
        ["序号", "用户ID", "姓名", "手机号", "报名时间"],
        [
            [i, e.user_id, e.real_name or "", e.phone_masked or "", e.signed_up_at]
            for i, e in enumerate(current.confirmed, start=1)
        ],
    )
    waitlist = Sheet(
        "候补",
        ["候补顺位", "用户ID", "姓名"],
        [[e.position, e.user_id, e.real_name or ""] for e in current.waitlist],
    )
    pending = Sheet(
        "待审核",
        ["序号", "用户ID", "姓名", "手机号", "报名时间"],
        [
            [i, e.user_id, e.real_name or "", e.phone_masked or "", e.signed_up_at]
            for i, e in enumerate(current.pending, start=1)
        ],
    )
    summary = Sheet("概况", ["活动", "已确认", "候补", "待审核"], [
        [title, len(current.confirmed), len(current.waitlist), len(current.pending)]
    ])  # fmt: skip
    return await ctx.run_blocking(workbook, [summary, confirmed, waitlist, pending])


async def active_records(ctx, activity_id: ObjectId):
    """The activity's records that hold or wait for a seat, or are held by a decision (what the
    repair after a crash counts)."""
    async for record in ctx.db["signups"].find(
        {"activity_id": activity_id, "status": {"$in": [*ACTIVE, "deciding"]}},
        {"status": 1, "updated_at": 1},
    ):
        yield record
