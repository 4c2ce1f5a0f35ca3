"""i科普 projects and activities: creation, lifecycle, discovery, and the seat counters.

Owns the `projects` and `activities` collections. The counters on an activity (confirmed,
waitlisted, pending) change only through the atomic operations at the end of this module, each
one conditional update; sign-ups (server/domain/signups.py) call them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from bson import ObjectId
from pymongo import ReturnDocument

from server import geo
from server.db import aggregate
from server.domain import events, geocoding, orgs, sites
from server.domain.errors import Conflict, InvalidRequest, NotFound, UpstreamError
from server.domain.ids import fetch, parse_id
from server.domain.paging import DEFAULT_LIMIT, decode_cursor, encode_cursor
from server.wechat.client import WeChatError

Status = Literal["draft", "published", "ongoing", "finished", "cancelled"]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
DEFAULT_CHECKIN_RADIUS_M = 500
CARAVAN_TAG = "科普大篷车"
"""The tag of activities that are caravan visits: statistics count them as caravan work."""


class NewProject(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    org_id: str
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class NewActivity(msgspec.Struct, forbid_unknown_fields=True):
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
    description: Annotated[str, msgspec.Meta(max_length=5000)]
    org_id: str
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    capacity: Annotated[int, msgspec.Meta(ge=1, le=100_000)]
    site_id: str | None = None
    project_id: str | None = None
    location: sites.LocationIn | None = None
    address: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    signup_deadline: AwareDatetime | None = None
    waitlist: bool = True
    tags: Annotated[list[Tag], msgspec.Meta(max_length=10)] = []
    approval: Literal["auto", "manual"] = "auto"
    checkin_radius_m: Annotated[int, msgspec.Meta(ge=50, le=5000)] = DEFAULT_CHECKIN_RADIUS_M


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


class Activity(msgspec.Struct):
    id: str
    title: str
    description: str
    status: str
    org_id: str
    project_id: str | None
    site_id: str | None
    location: dict | None
    address: str | None
    starts_at: datetime
    ends_at: datetime
    signup_deadline: datetime
    capacity: int
    confirmed_count: int
    waitlist_count: int
    pending_count: int
    waitlist: bool
    approval: str
    tags: list[str]
    checkin_radius_m: int


class ActivityPage(msgspec.Struct):
    items: list[ActivityItem]
    next_cursor: str | None


class StatusOut(msgspec.Struct):
    status: str


class Reach(msgspec.Struct, forbid_unknown_fields=True):
    beneficiaries: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]


class ReachOut(msgspec.Struct):
    activity_id: str
    beneficiaries: int


class HeldActivity(msgspec.Struct, frozen=True):
    """What statistics need of an activity that took (or will take) place."""

    activity_id: ObjectId
    org_id: ObjectId
    project_id: ObjectId | None
    site_id: ObjectId | None
    starts_at: datetime
    beneficiaries: int
    caravan_visit: bool


# -- projects ---------------------------------------------------------------------------------


async def create_project(ctx, new: NewProject, *, created_by: ObjectId) -> ObjectId:
    org_id = parse_id(new.org_id, "org_id")
    await orgs.get_org(ctx, org_id)
    doc = {
        "_id": ObjectId(),
        "name": new.name.strip(),
        "org_id": org_id,
        "description": new.description,
        "created_by": created_by,
        "created_at": ctx.clock.now(),
    }
    await ctx.db["projects"].insert_one(doc)
    return doc["_id"]


# -- activities -------------------------------------------------------------------------------


def effective_status(doc: dict, now: datetime) -> str:
    """Stored status, moved on by the clock: a published activity is ongoing once it starts and
    finished once it ends (the daily job writes this down; reads never wait for it)."""
    status = doc["status"]
    if status in ("published", "ongoing"):
        if now >= doc["ends_at"]:
            return "finished"
        if now >= doc["starts_at"]:
            return "ongoing"
    return status


def _activity_out(doc: dict, now: datetime) -> Activity:
    return Activity(
        id=str(doc["_id"]),
        title=doc["title"],
        description=doc["description"],
        status=effective_status(doc, now),
        org_id=str(doc["org_id"]),
        project_id=str(doc["project_id"]) if doc.get("project_id") else None,
        site_id=str(doc["site_id"]) if doc.get("site_id") else None,
        location=doc.get("location"),
        address=doc.get("address"),
        starts_at=doc["starts_at"],
        ends_at=doc["ends_at"],
        signup_deadline=doc["signup_deadline"],
        capacity=doc["capacity"],
        confirmed_count=doc["confirmed_count"],
        waitlist_count=doc["waitlist_count"],
        pending_count=doc["pending_count"],
        waitlist=doc["waitlist"],
        approval=doc["approval"],
        tags=doc.get("tags", []),
        checkin_radius_m=doc.get("checkin_radius_m", DEFAULT_CHECKIN_RADIUS_M),
    )


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


async def create_activity(ctx, new: NewActivity, *, created_by: ObjectId) -> ObjectId:
    org_id = parse_id(new.org_id, "org_id")
    await orgs.get_org(ctx, org_id)
    if new.ends_at <= new.starts_at:
        raise InvalidRequest("结束时间须晚于开始时间", field="ends_at")
    deadline = new.signup_deadline or new.starts_at
    if deadline > new.starts_at:
        raise InvalidRequest("报名截止时间不能晚于开始时间", field="signup_deadline")
    project_id = parse_id(new.project_id, "project_id") if new.project_id else None
    if project_id and not await ctx.db["projects"].find_one({"_id": project_id}, {"_id": 1}):
        raise NotFound("项目不存在", field="project_id")
    site_id, location, address = None, None, new.address
    if new.site_id:
        site = await sites.get_site_doc(ctx, new.site_id)
        site_id, location, address = site["_id"], site["location"], address or site["address"]
    if new.location is not None:
        location = new.location.to_geojson()
    elif location is None and address:
        location = await geocoding.locate_address(ctx, address)
    doc = activity_doc(
        ctx,
        title=new.title.strip(),
        description=new.description,
        org_id=org_id,
        project_id=project_id,
        site_id=site_id,
        location=location,
        address=address,
        starts_at=new.starts_at,
        ends_at=new.ends_at,
        signup_deadline=deadline,
        capacity=new.capacity,
        waitlist=new.waitlist,
        tags=new.tags,
        approval=new.approval,
        checkin_radius_m=new.checkin_radius_m,
        created_by=created_by,
    )
    await ctx.db["activities"].insert_one(doc)
    return doc["_id"]


def activity_doc(
    ctx,
    *,
    title: str,
    description: str,
    org_id: ObjectId,
    starts_at: datetime,
    ends_at: datetime,
    capacity: int,
    created_by: ObjectId | None,
    project_id: ObjectId | None = None,
    site_id: ObjectId | None = None,
    location: dict | None = None,
    address: str | None = None,
    signup_deadline: datetime | None = None,
    waitlist: bool = True,
    tags: list[str] = (),
    approval: str = "auto",
    checkin_radius_m: int = DEFAULT_CHECKIN_RADIUS_M,
    status: Status = "draft",
    confirmed_count: int = 0,
) -> dict:
    """The one shape of an activity, for the single path above and bulk loads alike."""
    now = ctx.clock.now()
    doc = {
        "_id": ObjectId(),
        "title": title,
        "description": description,
        "org_id": org_id,
        "project_id": project_id,
        "site_id": site_id,
        "location": location,
        "address": address,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "signup_deadline": signup_deadline or starts_at,
        "capacity": capacity,
        "waitlist": waitlist,
        "tags": list(dict.fromkeys(tags)),
        "approval": approval,
        "checkin_radius_m": checkin_radius_m,
        "status": status,
        "confirmed_count": confirmed_count,
        "waitlist_count": 0,
        "pending_count": 0,
        "waitlist_seq": 0,
        "waitlist_front": 0,
        "created_by": created_by,
        "created_at": now,
    }
    if status != "draft":
        doc["published_at"] = now
    if location is None:
        doc.pop("location")  # a 2dsphere index refuses null; an activity may have no place yet
    return doc


async def import_activities(ctx, docs: list[dict]) -> int:
    """Bulk path for data loads: activities built by `activity_doc`, written in one call."""
    if not docs:
        return 0
    result = await ctx.db["activities"].insert_many(docs, ordered=False)
    return len(result.inserted_ids)


async def get_doc(ctx, activity_id) -> dict:
    return await fetch(ctx.db["activities"], activity_id, "activity_id", "活动不存在")


async def get_activity(ctx, activity_id, *, public: bool = False) -> Activity:
    doc = await get_doc(ctx, activity_id)
    if public and doc["status"] == "draft":
        raise NotFound("活动不存在", field="activity_id")
    return _activity_out(doc, ctx.clock.now())


async def publish(ctx, activity_id, *, publisher_openid: str) -> str:
    doc = await get_doc(ctx, activity_id)
    if doc["status"] == "published":
        return "published"
    if doc["status"] != "draft":
        raise Conflict(f"{doc['status']} 状态的活动不能发布", code="invalid_state")
    if doc["ends_at"] <= ctx.clock.now():
        raise Conflict("活动已结束，不能发布", code="invalid_state")
    await _check_content(ctx, f"{doc['title']}\n{doc['description']}", publisher_openid)
    result = await ctx.db["activities"].update_one(
        {"_id": doc["_id"], "status": "draft"},
        {"$set": {"status": "published", "published_at": ctx.clock.now()}},
    )
    if result.modified_count:
        await events.emit(ctx, events.ACTIVITY_PUBLISHED, activity_id=doc["_id"])
    return "published"


async def _check_content(ctx, text: str, openid: str) -> None:
    """WeChat's content security check (msg_sec_check v2) before anything goes public."""
    try:
        verdict = await ctx.wechat.msg_sec_check(text, openid, scene=1)
    except WeChatError as exc:
        raise UpstreamError(f"内容安全检查暂不可用（{exc.errcode}），请稍后重试") from None
    if verdict.get("result", {}).get("suggest", "pass") != "pass":
        raise InvalidRequest(
            "活动标题或介绍未通过内容安全检查，请修改后再发布",
            code="content_rejected",
            field="description",
        )


async def mark_cancelled(ctx, activity_id, *, reason: str | None) -> bool:
    """True when this call cancelled it; False when it was cancelled already."""
    doc = await get_doc(ctx, activity_id)
    if doc["status"] == "cancelled":
        return False
    if effective_status(doc, ctx.clock.now()) == "finished":
        raise Conflict("已结束的活动不能取消", code="invalid_state")
    result = await ctx.db["activities"].update_one(
        {"_id": doc["_id"], "status": {"$in": ["draft", "published", "ongoing"]}},
        {
            "$set": {
                "status": "cancelled",
                "cancelled_at": ctx.clock.now(),
                "cancel_reason": reason,
                "confirmed_count": 0,
                "waitlist_count": 0,
                "pending_count": 0,
            }
        },
    )
    return result.modified_count == 1


async def report_reach(ctx, activity_id, reach: Reach) -> ReachOut:
    """The organiser reports how many people the activity reached (受益人次), once it has
    started; a later report replaces the earlier one."""
    doc = await get_doc(ctx, activity_id)
    status = effective_status(doc, ctx.clock.now())
    if status not in ("ongoing", "finished"):
        raise Conflict(f"{status} 状态的活动不能登记受益人次", code="invalid_state")
    before = await ctx.db["activities"].find_one_and_update(
        {"_id": doc["_id"], "status": {"$ne": "cancelled"}},
        {"$set": {"beneficiaries": reach.beneficiaries}},
        projection={"beneficiaries": 1},
    )
    if before is None:
        raise Conflict("活动已取消", code="invalid_state")
    delta = reach.beneficiaries - before.get("beneficiaries", 0)
    if delta:
        await events.emit(ctx, events.ACTIVITY_REACHED, activity_id=doc["_id"], delta=delta)
    return ReachOut(activity_id=str(doc["_id"]), beneficiaries=reach.beneficiaries)


_HELD_FIELDS = {"org_id": 1, "project_id": 1, "site_id": 1, "starts_at": 1, "beneficiaries": 1,
                "tags": 1}  # fmt: skip


def _held(doc: dict) -> HeldActivity:
    return HeldActivity(
        activity_id=doc["_id"],
        org_id=doc["org_id"],
        project_id=doc.get("project_id"),
        site_id=doc.get("site_id"),
        starts_at=doc["starts_at"],
        beneficiaries=doc.get("beneficiaries", 0),
        caravan_visit=CARAVAN_TAG in doc.get("tags", ()),
    )


async def held_activity(ctx, activity_id: ObjectId) -> HeldActivity | None:
    """The activity as statistics count it, None if it never went public (a draft)."""
    doc = await ctx.db["activities"].find_one(
        {"_id": activity_id, "published_at": {"$exists": True}}, _HELD_FIELDS
    )
    return _held(doc) if doc else None


async def held_activities(ctx, start: datetime, end: datetime) -> list[HeldActivity]:
    """Published activities starting in [start, end) that were not cancelled."""
    query: dict = {
        "status": {"$in": ["published", "ongoing", "finished"]},
        "starts_at": {"$gte": start, "$lt": end},
    }
    cursor = ctx.db["activities"].find(query, _HELD_FIELDS, batch_size=10_000)
    return [_held(doc) async for doc in cursor]


async def count_projects(ctx, org_ids: set[ObjectId], created_before: datetime) -> int:
    # A province has some hundred projects: reading them beats a long $in.
    cursor = ctx.db["projects"].find({"created_at": {"$lt": created_before}}, {"org_id": 1})
    return sum([1 async for doc in cursor if doc["org_id"] in org_ids])


async def project_briefs(ctx, project_ids: list[ObjectId]) -> dict[ObjectId, dict]:
    """Name and organisation of each project, for reports."""
    cursor = ctx.db["projects"].find({"_id": {"$in": project_ids}}, {"name": 1, "org_id": 1})
    return {doc.pop("_id"): doc async for doc in cursor}


async def staff_org(ctx, activity_id) -> ObjectId:
    doc = await ctx.db["activities"].find_one(
        {"_id": parse_id(activity_id, "activity_id")}, {"org_id": 1}
    )
    if doc is None:
        raise NotFound("活动不存在", field="activity_id")
    return doc["org_id"]


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
    position = decode_cursor(cursor)
    coll = ctx.db["activities"]
    if near is not None:
        try:
            lng, lat = geo.geojson_point(*near)["coordinates"]
            near = geo.to_wgs84(lng, lat, coord_type)
        except ValueError as exc:
            raise InvalidRequest(f"near: {exc}", field="near") from None
        offset = int((position or {}).get("o", 0))
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
        following = {"o": offset + limit}
    else:
        if position:
            after = datetime.fromisoformat(position["s"])
            query["$or"] = [
                {"starts_at": {"$gt": after}},
                {"starts_at": after, "_id": {"$gt": ObjectId(position["i"])}},
            ]
        docs = await coll.find(query).sort([("starts_at", 1), ("_id", 1)]).to_list(limit + 1)
        following = (
            {"s": docs[limit - 1]["starts_at"].isoformat(), "i": str(docs[limit - 1]["_id"])}
            if len(docs) > limit
            else None
        )
    more = len(docs) > limit
    return ActivityPage(
        items=[_item_out(d, now) for d in docs[:limit]],
        next_cursor=encode_cursor(following) if more else None,
    )


# -- seat counters: every change is one conditional update ------------------------------------

_WINDOW = {
    "title": 1,
    "starts_at": 1,
    "ends_at": 1,
    "org_id": 1,
    "capacity": 1,
    "waitlist": 1,
    "address": 1,
    "tags": 1,
}


def _open_for_signup(now: datetime) -> dict:
    return {"status": "published", "signup_deadline": {"$gt": now}, "starts_at": {"$gt": now}}


async def take_seat(ctx, activity_id: ObjectId, *, by: Literal["signup", "approval", "promotion"]):
    """One confirmed seat if one is free; None otherwise.

    A sign-up or an approval takes a seat only while nobody waits (free seats go to the waitlist
    first, through a promotion) and only while sign-up is open.
    """
    query: dict = {"_id": activity_id, "$expr": {"$lt": ["$confirmed_count", "$capacity"]}}
    if by == "promotion":
        query["status"] = "published"
    else:
        query.update(_open_for_signup(ctx.clock.now()), waitlist_count=0)
        if by == "signup":
            query["approval"] = "auto"
    return await ctx.db["activities"].find_one_and_update(
        query, {"$inc": {"confirmed_count": 1}}, projection=_WINDOW
    )


async def join_waitlist(ctx, activity_id: ObjectId, *, approval: str | None) -> dict | None:
    """A place at the back of the waitlist; the returned `waitlist_seq` orders it, and the
    counters after the change say whether a seat is free to promote into."""
    query = {"_id": activity_id, "waitlist": True, **_open_for_signup(ctx.clock.now())}
    if approval:
        query["approval"] = approval
    return await ctx.db["activities"].find_one_and_update(
        query,
        {"$inc": {"waitlist_count": 1, "waitlist_seq": 1}},
        projection={**_WINDOW, "waitlist_seq": 1, "waitlist_count": 1, "confirmed_count": 1},
        return_document=ReturnDocument.AFTER,
    )


async def join_pending(ctx, activity_id: ObjectId) -> dict | None:
    query = {"_id": activity_id, "approval": "manual", **_open_for_signup(ctx.clock.now())}
    return await ctx.db["activities"].find_one_and_update(
        query, {"$inc": {"pending_count": 1}}, projection=_WINDOW
    )


async def front_of_waitlist(ctx, activity_id: ObjectId, seats: int) -> int:
    """Counter value for the head of the waitlist (people moved off confirmed go first)."""
    doc = await ctx.db["activities"].find_one_and_update(
        {"_id": activity_id},
        {"$inc": {"waitlist_front": -seats}},
        projection={"waitlist_front": 1},
        return_document=ReturnDocument.AFTER,
    )
    return doc["waitlist_front"]


async def adjust_counts(ctx, activity_id: ObjectId, **deltas: int) -> None:
    changes = {f"{name}_count": delta for name, delta in deltas.items() if delta}
    if changes:
        await ctx.db["activities"].update_one({"_id": activity_id}, {"$inc": changes})


async def set_capacity(ctx, activity_id: ObjectId, capacity: int, *, min_confirmed: bool) -> dict:
    """New capacity; with `min_confirmed`, refused when fewer seats than confirmed people."""
    query: dict = {"_id": activity_id, "status": {"$in": ["draft", "published"]}}
    if min_confirmed:
        query["confirmed_count"] = {"$lte": capacity}
    doc = await ctx.db["activities"].find_one_and_update(
        query, {"$set": {"capacity": capacity}}, return_document=ReturnDocument.AFTER
    )
    if doc is None:
        current = await get_doc(ctx, activity_id)
        if current["status"] not in ("draft", "published"):
            raise Conflict(f"{current['status']} 状态的活动不能修改名额", code="invalid_state")
        raise Conflict(
            f"已有 {current['confirmed_count']} 人确认报名，名额不能少于此数",
            code="capacity_below_confirmed",
            field="capacity",
        )
    return doc


async def set_counts(ctx, activity_id: ObjectId, counts: dict[str, int]) -> None:
    await ctx.db["activities"].update_one(
        {"_id": activity_id}, {"$set": {f"{name}_count": n for name, n in counts.items()}}
    )


async def titles(ctx, activity_ids: list[ObjectId]) -> dict[ObjectId, str]:
    cursor = ctx.db["activities"].find({"_id": {"$in": activity_ids}}, {"title": 1})
    return {doc["_id"]: doc["title"] async for doc in cursor}


async def advance_lifecycle(ctx) -> dict[str, int]:
    """Write down what the clock already shows: published → ongoing → finished."""
    now = ctx.clock.now()
    finished = await ctx.db["activities"].update_many(
        {"status": {"$in": ["published", "ongoing"]}, "ends_at": {"$lte": now}},
        {"$set": {"status": "finished"}},
    )
    ongoing = await ctx.db["activities"].update_many(
        {"status": "published", "starts_at": {"$lte": now}}, {"$set": {"status": "ongoing"}}
    )
    return {"ongoing": ongoing.modified_count, "finished": finished.modified_count}
