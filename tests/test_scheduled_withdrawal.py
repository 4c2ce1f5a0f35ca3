"""Withdrawing a visit a published plan scheduled: the school cancels it (or a dispatcher
declines it), its crew activity is cancelled (seats freed, the crew told), the site's admins are
told of a decline, the plan says which of its visits were withdrawn, and a visit that took place
(a trip logged it) or whose day has passed stays as it is."""

from __future__ import annotations

from datetime import date, datetime, time

import pytest
from bson import ObjectId
from test_caravans import World, offset

from server.clock import SHANGHAI
from server.domain import activities, caravans, planning, rosters, signups


@pytest.fixture
def settings_overrides():
    return {"access_token_ttl_s": 60 * 86400}  # the clock moves days ahead below


@pytest.fixture
async def world(ctx, http, login):
    built = await World(ctx, http).build(login)
    yield built
    await ctx.solves.drain(cancel=True)


async def published(world: World, *names: str) -> tuple[dict, dict[str, dict]]:
    """A caravan, a school per name with one request, the plan solved and published: the plan
    and, by school name, its request and visit (request_id, activity_id, date)."""
    caravan = await world.caravan(1, crew_size=3)
    requests = {}
    for i, name in enumerate(names):
        site = await world.site(name, offset(4 + 3 * i, 2 - i))
        requests[name] = await world.request(site, 0, 4, 90)
    plan = await world.until_done(await world.plan(time_limit_s=1))
    out = await world.post(f"/api/v1/plans/{plan['id']}/publish")
    days = {s["request_id"]: r["date"] for r in plan["routes"] for s in r["stops"]}
    activity = {p["request_id"]: p["activity_id"] for p in out["published"]}
    visits = {
        name: {"request_id": r, "activity_id": activity[r], "date": days[r], "caravan_id": caravan}
        for name, r in requests.items()
    }
    return plan, visits


async def test_a_school_cancels_a_scheduled_visit_and_a_dispatcher_declines_one(ctx, world, login):
    plan, visits = await published(world, "城关小学", "北关小学")
    cancelled, declined = visits["城关小学"], visits["北关小学"]
    crew = await login("o_crew_member")
    await signups.sign_up(ctx, ObjectId(crew.user_id), cancelled["activity_id"])
    other_crew = await login("o_other_crew")
    await signups.sign_up(ctx, ObjectId(other_crew.user_id), declined["activity_id"])

    path = f"/api/v1/visit-requests/{cancelled['request_id']}/cancel"
    out = await world.post(path, session=world.site_admin)
    assert out["status"] == "cancelled" and out["withdrawn_at"]
    assert out["activity_id"] == cancelled["activity_id"] and out["date"] == cancelled["date"]
    activity = await activities.get_doc(ctx, cancelled["activity_id"])
    assert activity["status"] == "cancelled"
    assert activity["seats_left"] == activity["capacity"] == 3
    assert activity["confirmed_count"] == 0
    roster = await rosters.roster(ctx, cancelled["activity_id"])
    assert roster.confirmed == [] and roster.waitlist == []
    told = await ctx.db.reminders.find_one(
        {"user_id": ObjectId(crew.user_id), "template_key": "activity_changed"}
    )
    # The crew is told why, as far as WeChat's 20 characters go.
    assert told is not None
    assert told["data"]["thing3"]["value"] == "已取消：学校取消了这次大篷车走访"

    again = await world.post(path, session=world.site_admin, status=409)
    assert again["error"] == {"code": "request_closed", "message": "申请已取消", "field": None}
    trip = {
        "caravan_id": cancelled["caravan_id"],
        "date": ctx.clock.local_now().date().isoformat(),
        "odometer_start_km": 100,
        "odometer_end_km": 130,
        "visits": [{"request_id": cancelled["request_id"], "beneficiaries": 50}],
    }
    refused = await world.post("/api/v1/trips", trip, status=409)
    assert refused["error"]["code"] == "request_closed"
    assert await ctx.db.trips.count_documents({}) == 0

    # The dispatcher declines the other: its crew is told, and so are the site's admins.
    decline = f"/api/v1/visit-requests/{declined['request_id']}/decline"
    blank = await world.post(decline, {"reason": "  "}, status=400)
    assert blank["error"]["field"] == "reason"
    assert (await caravans.get_request_doc(ctx, declined["request_id"]))["status"] == "scheduled"
    out = await world.post(decline, {"reason": "车辆临时检修"})
    assert (out["status"], out["reason"]) == ("declined", "车辆临时检修")
    assert (await activities.get_doc(ctx, declined["activity_id"]))["status"] == "cancelled"
    assert await ctx.db.reminders.find_one(
        {"user_id": ObjectId(other_crew.user_id), "template_key": "activity_changed"}
    )
    site_told = await ctx.db.reminders.find_one(
        {"user_id": ObjectId(world.site_admin.user_id), "template_key": "visit_declined"}
    )
    assert site_told["data"]["thing3"]["value"] == "车辆临时检修"

    withdrawn = await planning.publishing.withdrawn_visits(
        ctx, await planning.get_plan(ctx, plan["id"])
    )
    assert withdrawn == {cancelled["request_id"]: "cancelled", declined["request_id"]: "declined"}


async def test_a_visit_that_took_place_or_whose_day_passed_is_not_withdrawn(ctx, world):
    _, visits = await published(world, "城关小学", "北关小学")
    done, missed = visits["城关小学"], visits["北关小学"]
    last_day = max(date.fromisoformat(v["date"]) for v in visits.values())
    # The evening after the last visit day: the crew logs the day they visited 城关小学.
    evening = datetime.combine(last_day, time(20), SHANGHAI)
    ctx.clock.advance((evening - ctx.clock.now()).total_seconds())
    trip = {
        "caravan_id": done["caravan_id"],
        "date": done["date"],
        "odometer_start_km": 100,
        "odometer_end_km": 142,
        "visits": [{"request_id": done["request_id"], "beneficiaries": 300}],
    }
    await world.post("/api/v1/trips", trip, status=201)

    for action, body, verb in (("cancel", None, "取消"), ("decline", {"reason": "x"}, "拒绝")):
        path = f"/api/v1/visit-requests/{done['request_id']}/{action}"
        refused = await world.post(path, body, status=409)
        assert refused["error"] == {
            "code": "visit_logged",
            "message": f"该走访已登记出车，不能{verb}",
            "field": None,
        }
        path = f"/api/v1/visit-requests/{missed['request_id']}/{action}"
        refused = await world.post(path, body, status=409)
        assert refused["error"] == {
            "code": "visit_over",
            "message": f"走访时间已过，不能{verb}",
            "field": None,
        }
    for visit in (done, missed):
        request = await caravans.get_request_doc(ctx, visit["request_id"])
        assert request["status"] == "scheduled" and "withdrawn_at" not in request
        assert (await activities.get_doc(ctx, visit["activity_id"]))["status"] != "cancelled"
