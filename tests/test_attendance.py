"""Attendance you cannot fake: what a check-in must show is the activity's policy, and the scene
shown on site is bound to its activity."""

from __future__ import annotations

from datetime import timedelta

import pytest
from bson import ObjectId

from server.domain import activities, attendance, signups
from tests.test_hours import SITE, Scene


@pytest.fixture
def settings_overrides():
    return {"access_token_ttl_s": 60 * 86400}


@pytest.fixture
async def scene(ctx, http, login):
    return await Scene(ctx, http).build(login)


async def _check_in(scene, session, activity, *, scene_code=None, lng=SITE[0], lat=SITE[1]):
    body = {"location": {"lng": lng, "lat": lat}}
    if scene_code is not None:
        body["scene"] = scene_code
    return await scene.http.post(
        f"/mp/v1/activities/{activity}/checkin", json=body, headers=session.headers
    )


async def _activity(scene, **fields) -> ObjectId:
    ctx = scene.ctx
    new = activities.NewActivity(
        title="线上科普讲座",
        description="讲座",
        org_id=str(scene.county),
        starts_at=scene.starts_at,
        ends_at=scene.starts_at + timedelta(hours=2),
        capacity=10,
        **fields,
    )
    activity = await activities.create_activity(
        ctx, new, created_by=ObjectId(scene.organiser.user_id)
    )
    await activities.publish(ctx, activity, publisher_openid="o_organiser")
    return activity


async def test_at_a_site_the_code_is_required_and_must_be_this_activitys(scene, login):
    volunteer = await scene.volunteer(login, "o_policy")
    assert (await activities.get_activity(scene.ctx, scene.activity)).checkin == "code+location"
    scene.at(-5)
    bare = await _check_in(scene, volunteer, scene.activity)
    assert bare.status_code == 400, bare.text
    assert bare.json()["error"]["code"] == "invalid_scene"
    assert bare.json()["error"]["field"] == "scene"

    elsewhere = await _activity(scene, site_id=str(scene.site))
    foreign = (await attendance.checkin_code(scene.ctx, elsewhere)).scene
    wrong = await _check_in(scene, volunteer, scene.activity, scene_code=foreign)
    assert wrong.status_code == 400, wrong.text
    assert wrong.json()["error"]["code"] == "invalid_scene"
    assert await scene.ctx.db.attendance.count_documents({}) == 0

    own = (await attendance.checkin_code(scene.ctx, scene.activity)).scene
    far = await _check_in(scene, volunteer, scene.activity, scene_code=own, lng=SITE[0] + 0.05)
    assert far.json()["error"]["code"] == "out_of_range"  # the code alone is not enough either
    right = await _check_in(scene, volunteer, scene.activity, scene_code=own)
    assert right.status_code == 200, right.text


async def test_without_a_place_the_code_alone_checks_in(scene, login):
    online = await _activity(scene)
    assert (await activities.get_activity(scene.ctx, online)).checkin == "code"
    volunteer = await login("o_online")
    await signups.sign_up(scene.ctx, ObjectId(volunteer.user_id), online)
    scene.at(-5)
    bare = await _check_in(scene, volunteer, online, lng=120.0, lat=30.0)
    assert bare.json()["error"]["code"] == "invalid_scene"
    code = (await attendance.checkin_code(scene.ctx, online)).scene
    anywhere = await _check_in(scene, volunteer, online, scene_code=code, lng=120.0, lat=30.0)
    assert anywhere.status_code == 200, anywhere.text


async def test_a_location_only_policy_takes_no_code_but_needs_a_place(scene, login, http):
    located = await _activity(scene, site_id=str(scene.site), checkin="location")
    volunteer = await login("o_located")
    await signups.sign_up(scene.ctx, ObjectId(volunteer.user_id), located)
    scene.at(-5)
    near = await _check_in(scene, volunteer, located)
    assert near.status_code == 200, near.text

    body = {
        "title": "无地点",
        "description": "x",
        "org_id": str(scene.county),
        "starts_at": scene.starts_at.isoformat(),
        "ends_at": (scene.starts_at + timedelta(hours=1)).isoformat(),
        "capacity": 5,
        "checkin": "location",
    }
    refused = await http.post("/api/v1/activities", json=body, headers=scene.organiser.headers)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["field"] == "checkin"
    unknown = await http.post(
        "/api/v1/activities", json={**body, "checkin": "none"}, headers=scene.organiser.headers
    )
    assert unknown.status_code == 400, unknown.text
