"""A school clerk named admin of their site does the day's work from the mini-program: sees the
site, lists its pending hours with the activity, confirms 60 at once, shows the check-in code;
and reaches nothing of another site."""

from __future__ import annotations

from datetime import timedelta

import pytest
from bson import ObjectId

from server.domain import access, activities, hours, identity, orgs, sites


@pytest.fixture
def settings_overrides():
    return {"access_token_ttl_s": 60 * 86400}


async def _site(ctx, name, org, lng) -> ObjectId:
    place = sites.LocationIn(lng=lng, lat=35.46)
    return await sites.create_site(
        ctx, sites.NewSite(name=name, kind="school", org_id=str(org), location=place)
    )


async def _activity(ctx, org, site) -> ObjectId:
    starts = ctx.clock.now() + timedelta(days=1)
    new = activities.NewActivity(
        title="家长科普志愿服务",
        description="家长进课堂",
        org_id=str(org),
        site_id=str(site),
        starts_at=starts,
        ends_at=starts + timedelta(hours=2),
        capacity=100,
    )
    activity = await activities.create_activity(ctx, new, created_by=None)
    await activities.publish(ctx, activity, publisher_openid="o_root_admin")
    return activity


async def test_a_site_admins_day_from_the_phone(ctx, http, login):
    root = await orgs.create_org(ctx, "省科协", "province", None)
    city = await orgs.create_org(ctx, "新乡市科协", "city", root)
    county = await orgs.create_org(ctx, "辉县市科协", "county", city)
    school = await _site(ctx, "城关小学", county, 113.80)
    other = await _site(ctx, "南关小学", county, 113.82)
    admin = await login("o_root_admin")
    await access.grant_role(ctx, ObjectId(admin.user_id), "org_admin", root)
    clerk = await login("o_clerk")
    named = await http.post(
        f"/api/v1/sites/{school}/admins", json={"user_id": clerk.user_id}, headers=admin.headers
    )
    assert named.status_code == 200, named.text

    me = (await http.get("/mp/v1/me", headers=clerk.headers)).json()
    assert me["admin_site_ids"] == [str(school)]
    mine = (await http.get("/mp/v1/me/sites", headers=clerk.headers)).json()
    assert [(s["id"], s["name"]) for s in mine["items"]] == [(str(school), "城关小学")]
    assert (await http.get(f"/api/v1/sites/{school}", headers=clerk.headers)).status_code == 200

    activity, elsewhere = await _activity(ctx, county, school), await _activity(ctx, county, other)
    parents = []
    for n in range(60):
        user = await identity.ensure_user(ctx, f"o_parent_{n}")
        await identity.update_profile(ctx, user, identity.ProfileChange(real_name="王芳"))
        credit = await hours.credit(
            ctx, user_id=user, hours=2.0, org_id=county, site_id=school,
            activity_id=activity, source="activity", served_at=ctx.clock.now(),
        )  # fmt: skip
        parents.append(credit)
    foreign = await hours.credit(
        ctx, user_id=ObjectId(clerk.user_id), hours=1.0, org_id=county, site_id=other,
        activity_id=elsewhere, source="activity", served_at=ctx.clock.now(),
    )  # fmt: skip

    listed = await http.get(
        f"/mp/v1/sites/{school}/hours?status=pending&limit=100", headers=clerk.headers
    )
    assert listed.status_code == 200, listed.text
    pending = listed.json()["items"]
    assert sorted(r["record_id"] for r in pending) == sorted(str(p) for p in parents)
    assert {r["activity_id"] for r in pending} == {str(activity)}

    confirm = await http.post(
        f"/mp/v1/sites/{school}/hours/confirm",
        json={"record_ids": [r["record_id"] for r in pending]},
        headers={**clerk.headers, "Idempotency-Key": "clerk-confirm-1"},
    )
    assert confirm.status_code == 200, confirm.text
    assert confirm.json() == {"confirmed": 60}
    left = await http.get(f"/mp/v1/sites/{school}/hours?status=pending", headers=clerk.headers)
    assert left.json()["items"] == []

    code = await http.get(f"/mp/v1/activities/{activity}/checkin-code", headers=clerk.headers)
    assert code.status_code == 200, code.text
    assert len(code.json()["scene"]) == 32
    staff_code = await http.get(
        f"/api/v1/activities/{activity}/checkin-code", headers=clerk.headers
    )
    assert staff_code.status_code == 200, staff_code.text

    # Another site's records, code and requests stay out of reach.
    for path in (
        f"/mp/v1/sites/{other}/hours",
        f"/mp/v1/sites/{other}/visits",
        f"/mp/v1/sites/{other}/visit-requests",
        f"/mp/v1/activities/{elsewhere}/checkin-code",
    ):
        refused = await http.get(path, headers=clerk.headers)
        assert refused.status_code == 403, (path, refused.text)
    sneaked = await http.post(
        f"/mp/v1/sites/{school}/hours/confirm",
        json={"record_ids": [str(foreign)]},
        headers=clerk.headers,
    )
    assert sneaked.status_code == 403, sneaked.text
    assert (await hours.my_hours(ctx, ObjectId(clerk.user_id))).pending_hours == 1.0

    visits = await http.get(f"/mp/v1/sites/{school}/visits", headers=clerk.headers)
    assert visits.status_code == 200, visits.text
    assert visits.json() == {"items": [], "next_cursor": None}
    # The clerk asks for a caravan visit and finds it in every list of their requests.
    monday = (ctx.clock.now() + timedelta(days=14)).date()
    ask = {"earliest_date": str(monday), "latest_date": str(monday + timedelta(days=4)),
           "duration_min": 90}  # fmt: skip
    asked = await http.post(
        "/api/v1/visit-requests", json={**ask, "site_id": str(school)}, headers=clerk.headers
    )
    assert asked.status_code == 201, asked.text
    theirs = await http.post(
        "/api/v1/visit-requests", json={**ask, "site_id": str(other)}, headers=admin.headers
    )
    assert theirs.status_code == 201, theirs.text
    for path in ("/api/v1/visit-requests", f"/mp/v1/sites/{school}/visit-requests"):
        listed = await http.get(path, headers=clerk.headers)
        assert listed.status_code == 200, listed.text
        assert [r["id"] for r in listed.json()["items"]] == [asked.json()["id"]], path
    everything = await http.get("/api/v1/visit-requests", headers=admin.headers)
    assert len(everything.json()["items"]) == 2


async def test_a_volunteer_holds_no_site(http, login):
    volunteer = await login("o_plain")
    mine = await http.get("/mp/v1/me/sites", headers=volunteer.headers)
    assert mine.json() == {"items": []}
    refused = await http.get(f"/mp/v1/sites/{ObjectId()}/hours", headers=volunteer.headers)
    assert refused.status_code in (403, 404), refused.text
