"""Publishing a match: each visit becomes a published activity of its county and its expert is
sent a subscribe message; once per match, and safe to retry after an interrupted attempt.

A unique index on (expert, date) over scheduled requests keeps an expert at one visit a day
across matches; the monthly limit (`expert_visits_per_month`) is counted after a request is
taken, and the request given back when the month is over it, so two publications at once never
exceed it.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from bson import ObjectId

from server.clock import SHANGHAI
from server.domain import activities, expert_matching, notifications, sites
from server.domain.errors import Conflict
from server.domain.experts.expert_requests import (
    get_request_doc,
    give_back,
    record_activity,
    scheduled_by,
    take,
    visits_in_month,
)
from server.domain.experts.matches import MatchOut, get_match, match_doc, match_out
from server.domain.experts.registry import get_expert_doc

EXPERT_TAG = "首席专家进县"
"""The tag of the activities that are expert visits."""
PUBLISH_CLAIM = timedelta(minutes=5)


async def publish(ctx, match_id, *, by: ObjectId, publisher_openid: str) -> MatchOut:
    """Each visit of the proposal becomes a published activity of its county and its expert is
    told; once per proposal, safe to retry after an interrupted attempt. A visit something
    changed since the proposal no longer allows is skipped, with the reason."""
    match = await match_doc(ctx, match_id)
    if match["status"] == "published":
        return await match_out(ctx, match)
    claimed = await _claim(ctx, match["_id"])
    if claimed is None:
        current = await match_doc(ctx, match["_id"])
        if current["status"] == "published":
            return await match_out(ctx, current)
        raise Conflict("匹配方案正在发布", code="match_busy")
    published, skipped = [], []
    try:
        for assignment in claimed["assignments"]:
            outcome = await _publish_visit(ctx, claimed, assignment, by, publisher_openid)
            if isinstance(outcome, ObjectId):
                published.append({"request_id": assignment["request_id"], "activity_id": outcome})
            else:
                skipped.append({"request_id": assignment["request_id"], "reason": outcome})
    except BaseException:
        await ctx.db["expert_matches"].update_one(
            {"_id": claimed["_id"], "status": "publishing"},
            {"$set": {"status": "proposed", "publishing_until": None}},
        )
        raise
    done = {
        "status": "published",
        "published_at": ctx.clock.now(),
        "published_by": by,
        "published": published,
        "skipped": skipped,
        "publishing_until": None,
    }
    await ctx.db["expert_matches"].update_one({"_id": claimed["_id"]}, {"$set": done})
    return await get_match(ctx, claimed["_id"])


async def _claim(ctx, match_id: ObjectId) -> dict | None:
    """The proposal, claimed for a while to publish; None while another publication holds it.
    Two conditional updates by `_id` (a proposal, or a publication whose claim ran out) rather
    than one $or, which the embedded server scans."""
    now = ctx.clock.now()
    matches = ctx.db["expert_matches"]
    claim = {"$set": {"status": "publishing", "publishing_until": now + PUBLISH_CLAIM}}
    for ready in (
        {"_id": match_id, "status": "proposed"},
        {"_id": match_id, "status": "publishing", "publishing_until": {"$lt": now}},
    ):
        if (await matches.update_one(ready, claim)).matched_count:
            return await matches.find_one({"_id": match_id})
    return None


async def _publish_visit(ctx, match: dict, assignment: dict, by, openid) -> ObjectId | str:
    """The visit's activity id, or why it was skipped."""
    request_id, expert_id = assignment["request_id"], assignment["expert_id"]
    expert = await get_expert_doc(ctx, expert_id)
    request = await scheduled_by(ctx, request_id, match["_id"])
    if request is None:  # not taken by an earlier, interrupted attempt of this publication
        if assignment["date"] not in expert["free_dates"]:
            return expert_matching.EXPERT_UNAVAILABLE
        refused = await take(
            ctx, request_id, expert_id=expert_id, day=assignment["date"], match_id=match["_id"]
        )
        if refused is not None:
            return refused
        # Counted after the request was taken, so of two publications at once neither goes
        # over: the one that finds the month over the limit gives its request back.
        day = date.fromisoformat(assignment["date"])
        if await visits_in_month(ctx, expert_id, day) > (ctx.settings.expert_visits_per_month):
            await give_back(ctx, request_id, match["_id"])
            return expert_matching.MONTHLY_LIMIT
        request = await get_request_doc(ctx, request_id)
    activity_id = request.get("activity_id")
    if activity_id is None:
        new = _activity(request, expert)
        activity_id = await activities.create_activity(ctx, new, created_by=by)
        await record_activity(ctx, request_id, activity_id)
    await activities.publish(ctx, activity_id, publisher_openid=openid)
    await notifications.tell_expert_of_visit(
        ctx,
        user_id=expert["user_id"],
        request_id=request_id,
        activity_id=activity_id,
        place=request["place"],
    )
    return activity_id


def _activity(request: dict, expert: dict) -> activities.NewActivity:
    day = date.fromisoformat(request["date"])
    hour, minute = (int(part) for part in request["start_time"].split(":"))
    starts_at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=SHANGHAI)
    subject = request.get("topic") or "、".join(request["fields"])
    lng, lat = request["location"]["coordinates"]
    return activities.NewActivity(
        title=f"首席科普专家进县·{subject}"[:60],
        description=(
            f"首席科普专家{expert['name']}（{'、'.join(expert['fields'])}）到{request['place']}"
            f"为{request['audience']}开展科普讲座与咨询。"
        ),
        org_id=str(request["org_id"]),
        location=sites.LocationIn(lng=lng, lat=lat),
        address=request.get("address") or request["place"],
        starts_at=starts_at,
        ends_at=starts_at + timedelta(minutes=request["duration_min"]),
        capacity=request["audience_size"],
        tags=[EXPERT_TAG],
    )
