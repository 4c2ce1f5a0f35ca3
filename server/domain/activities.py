"""i科普 activities: creation, publication, lifecycle, reach, and what statistics read of them.

Owns the `activities` collection; an activity may belong to a project (server/domain/projects.py).
The seat counters on an activity (confirmed, waitlisted, pending) and its capacity change through
server/domain/seats.py, each change one conditional update (cancelling, here, zeroes them); the
mini-program's listing is server/domain/discovery.py, the staff's server/domain/activity_lists.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from bson import ObjectId

from server.domain import access, events, geocoding, orgs, projects, sites
from server.domain.errors import Conflict, InvalidRequest, NotFound, UpstreamError
from server.domain.ids import fetch, parse_id
from server.domain.text import line, lines
from server.wechat.client import WeChatError

Status = Literal["draft", "published", "ongoing", "finished", "cancelled"]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Tag = line(20)
CheckinPolicy = Literal["code", "code+location", "location"]
DEFAULT_CHECKIN_RADIUS_M = 500
CARAVAN_TAG = "科普大篷车"
"""The tag of activities that are caravan visits: statistics count them as caravan work."""
ORGANISE = "activity.organise"  # the permission in `access` that references are checked for


class NewActivity(msgspec.Struct, forbid_unknown_fields=True):
    title: line(60)
    description: lines(5000, 0)
    org_id: str
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    capacity: Annotated[int, msgspec.Meta(ge=1, le=100_000)]
    site_id: str | None = None
    project_id: str | None = None
    location: sites.LocationIn | None = None
    address: line(200, 0) | None = None
    signup_deadline: AwareDatetime | None = None
    waitlist: bool = True
    tags: Annotated[list[Tag], msgspec.Meta(max_length=10)] = []
    approval: Literal["auto", "manual"] = "auto"
    checkin_radius_m: Annotated[int, msgspec.Meta(ge=50, le=5000)] = DEFAULT_CHECKIN_RADIUS_M
    checkin: CheckinPolicy | None = None  # by default code+location at a place, code without


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
    checkin: str
    coord_type: str = "wgs84"  # the system `location` is in
    cancel_reason: str | None = None  # the organiser's, once cancelled


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


def activity_out(doc: dict, now: datetime, coord_type: str = "wgs84") -> Activity:
    return Activity(
        id=str(doc["_id"]),
        title=doc["title"],
        description=doc["description"],
        status=effective_status(doc, now),
        org_id=str(doc["org_id"]),
        project_id=str(doc["project_id"]) if doc.get("project_id") else None,
        site_id=str(doc["site_id"]) if doc.get("site_id") else None,
        location=sites.location_out(doc.get("location"), coord_type),
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
        checkin=checkin_policy(doc),
        coord_type=coord_type,
        cancel_reason=doc.get("cancel_reason"),
    )


def checkin_policy(doc: dict) -> CheckinPolicy:
    """What a check-in must show: the code displayed on site, being there, or both. An activity
    stored before policies existed gets the default of its kind."""
    if doc.get("checkin"):
        return doc["checkin"]
    return "code+location" if doc.get("location") else "code"


async def create_activity(ctx, new: NewActivity, *, created_by: ObjectId | None) -> ObjectId:
    """A draft; the site and project it names must lie where `created_by` may organise."""
    org_id = parse_id(new.org_id, "org_id")
    await orgs.get_org(ctx, org_id)
    if new.ends_at <= new.starts_at:
        raise InvalidRequest("结束时间须晚于开始时间", field="ends_at")
    deadline = new.signup_deadline or new.starts_at
    if deadline > new.starts_at:
        raise InvalidRequest("报名截止时间不能晚于开始时间", field="signup_deadline")
    project_id = parse_id(new.project_id, "project_id") if new.project_id else None
    if project_id:
        project = await projects.get_doc(ctx, project_id)
        await access.require(
            ctx, created_by, ORGANISE, org_id=project["org_id"], field="project_id"
        )
    site_id, location, address = None, None, new.address
    if new.site_id:
        site = await sites.get_site_doc(ctx, new.site_id)
        await access.require(ctx, created_by, ORGANISE, site=site, field="site_id")
        site_id, location, address = site["_id"], site["location"], address or site["address"]
    if new.location is not None:
        location = new.location.to_geojson()
    elif location is None and address:
        location = await geocoding.locate_address(ctx, address)
    if new.checkin in ("location", "code+location") and location is None:
        raise InvalidRequest("按位置签到需要活动地点：请选择站点或填写地点", field="checkin")
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
        checkin=new.checkin,
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
    checkin: CheckinPolicy | None = None,
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
        "checkin": checkin or ("code+location" if location else "code"),
        "status": status,
        "confirmed_count": confirmed_count,
        "seats_left": capacity - confirmed_count,
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


async def get_activity(
    ctx, activity_id, *, public: bool = False, coord_type: str = "wgs84"
) -> Activity:
    doc = await get_doc(ctx, activity_id)
    if public and doc["status"] == "draft":
        raise NotFound("活动不存在", field="activity_id")
    return activity_out(doc, ctx.clock.now(), coord_type)


class ActivityChange(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What an organiser may change. Times only on a draft: once published, volunteers have
    planned around them (a changed capacity has its own route, which tells them)."""

    title: line(60) | None = None
    description: lines(5000, 0) | None = None
    address: line(200, 0) | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=10)] | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    signup_deadline: AwareDatetime | None = None
    checkin_radius_m: Annotated[int, msgspec.Meta(ge=50, le=5000)] | None = None
    checkin: CheckinPolicy | None = None


async def update_activity(ctx, activity_id, change: ActivityChange, *, editor_openid: str):
    """Apply an organiser's change; the new title and description pass WeChat's content check
    when the activity is public. Returns the activity as it now is."""
    doc = await get_doc(ctx, activity_id)
    fields = {k: v for k, v in msgspec.structs.asdict(change).items() if v is not None}
    if doc["status"] in ("cancelled", "finished"):
        raise Conflict(f"{doc['status']} 状态的活动不能修改", code="invalid_state")
    timing = {"starts_at", "ends_at"} & fields.keys()
    if timing and doc["status"] != "draft":
        raise Conflict("已发布的活动不能修改时间，请取消后重新发布", code="invalid_state",
                       field=min(timing))  # fmt: skip
    new = {**doc, **fields}
    if new["ends_at"] <= new["starts_at"]:
        raise InvalidRequest("结束时间须晚于开始时间", field="ends_at")
    if "starts_at" in fields and "signup_deadline" not in fields:
        fields["signup_deadline"] = new["signup_deadline"] = min(doc["signup_deadline"],
                                                                 new["starts_at"])  # fmt: skip
    if new["signup_deadline"] > new["starts_at"]:
        raise InvalidRequest("报名截止时间不能晚于开始时间", field="signup_deadline")
    if fields.get("checkin") in ("location", "code+location") and not doc.get("location"):
        raise InvalidRequest("按位置签到需要活动地点：请选择站点或填写地点", field="checkin")
    if "title" in fields:
        fields["title"] = fields["title"].strip()
    if "tags" in fields:
        fields["tags"] = list(dict.fromkeys(fields["tags"]))
    if doc["status"] != "draft" and {"title", "description"} & fields.keys():
        await _check_content(ctx, f"{new['title']}\n{new['description']}", editor_openid)
    if fields:
        await ctx.db["activities"].update_one({"_id": doc["_id"]}, {"$set": fields})
        if doc["status"] != "draft":
            # Discovery's catalogue follows; nobody signed up needs telling of a text change.
            await events.emit(ctx, events.ACTIVITY_CHANGED, activity_id=doc["_id"],
                              changed=sorted(fields), user_ids=[])  # fmt: skip
    return await get_activity(ctx, doc["_id"])


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
    """True when this call cancelled it; False when it was cancelled already. The counts go to
    zero and every seat is free again (`seats_left` = capacity, the seat counters' rule), so the
    write is conditional on the status and capacity as read, read again when either moved."""
    while True:
        doc = await get_doc(ctx, activity_id)
        if doc["status"] == "cancelled":
            return False
        if effective_status(doc, ctx.clock.now()) == "finished":
            raise Conflict("已结束的活动不能取消", code="invalid_state")
        now = ctx.clock.now()
        result = await ctx.db["activities"].update_one(
            {"_id": doc["_id"], "status": doc["status"], "capacity": doc["capacity"]},
            {
                "$set": {
                    "status": "cancelled",
                    "cancelled_at": now,
                    "cancel_reason": reason,
                    "confirmed_count": 0,
                    "waitlist_count": 0,
                    "pending_count": 0,
                    "seats_left": doc["capacity"],
                    "seats_touched_at": now,
                }
            },
        )
        if result.modified_count == 1:
            return True


async def report_reach(ctx, activity_id, reach: Reach) -> ReachOut:
    """The organiser reports how many people the activity reached (受益人次), once it has
    started; a later report replaces the earlier one."""
    doc = await get_doc(ctx, activity_id)
    status = effective_status(doc, ctx.clock.now())
    if status not in ("ongoing", "finished"):
        raise Conflict(f"{status} 状态的活动不能登记受益人次", code="invalid_state")
    # Compare-and-set on the count as read, so each report's delta is from the one before it.
    coll, seen = ctx.db["activities"], doc.get("beneficiaries")
    while not (
        await coll.update_one(
            {"_id": doc["_id"], "status": {"$ne": "cancelled"}, "beneficiaries": seen},
            {"$set": {"beneficiaries": reach.beneficiaries}},
        )
    ).matched_count:
        current = await coll.find_one({"_id": doc["_id"]}, {"status": 1, "beneficiaries": 1})
        if current is None or current["status"] == "cancelled":
            raise Conflict("活动已取消", code="invalid_state")
        seen = current.get("beneficiaries")
    delta = reach.beneficiaries - (seen or 0)
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


async def staff_org(ctx, activity_id) -> ObjectId:
    doc = await ctx.db["activities"].find_one(
        {"_id": parse_id(activity_id, "activity_id")}, {"org_id": 1}
    )
    if doc is None:
        raise NotFound("活动不存在", field="activity_id")
    return doc["org_id"]


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
