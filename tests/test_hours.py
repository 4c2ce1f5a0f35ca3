"""Attendance and the hours ledger: on-site check-in, hours the site confirms, certificates."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypdf import PdfReader

from server import geo
from server.domain import (
    access,
    activities,
    adjustments,
    attendance,
    hours,
    identity,
    orgs,
    signups,
    sites,
)
from server.domain.errors import Conflict, InvalidRequest

SITE = (113.806, 35.462)  # 辉县市城关, WGS-84


@pytest.fixture
def settings_overrides():
    return {"access_token_ttl_s": 60 * 86400}


class Scene:
    def __init__(self, ctx, http):
        self.ctx, self.http = ctx, http

    async def build(self, login, *, radius=500, hours_long=3):
        ctx = self.ctx
        self.root = await orgs.create_org(ctx, "省科协", "province", None)
        city = await orgs.create_org(ctx, "新乡市科协", "city", self.root)
        self.county = await orgs.create_org(ctx, "辉县市科协", "county", city)
        self.other_county = await orgs.create_org(ctx, "卫辉市科协", "county", city)
        self.site = await sites.create_site(
            ctx,
            sites.NewSite(
                name="城关小学",
                kind="school",
                org_id=str(self.county),
                location=sites.LocationIn(lng=SITE[0], lat=SITE[1]),
            ),
        )
        self.other_site = await sites.create_site(
            ctx,
            sites.NewSite(
                name="林州一中",
                kind="school",
                org_id=str(self.other_county),
                location=sites.LocationIn(lng=113.82, lat=36.08),
            ),
        )
        self.site_admin = await login("o_site_admin")
        await sites.add_admin(ctx, self.site, ObjectId(self.site_admin.user_id))
        self.other_admin = await login("o_other_admin")
        await sites.add_admin(ctx, self.other_site, ObjectId(self.other_admin.user_id))
        self.organiser = await login("o_organiser")
        await access.grant_role(ctx, ObjectId(self.organiser.user_id), "team_leader", self.county)
        self.starts_at = ctx.clock.now() + timedelta(days=2)
        self.activity = await activities.create_activity(
            ctx,
            activities.NewActivity(
                title="科学实验秀",
                description="小学科学实验",
                org_id=str(self.county),
                site_id=str(self.site),
                starts_at=self.starts_at,
                ends_at=self.starts_at + timedelta(hours=hours_long),
                capacity=100,
                checkin_radius_m=radius,
            ),
            created_by=ObjectId(self.organiser.user_id),
        )
        await activities.publish(ctx, self.activity, publisher_openid="o_organiser")
        return self

    async def volunteer(self, login, openid, name="张三"):
        session = await login(openid)
        await identity.update_profile(
            self.ctx, ObjectId(session.user_id), identity.ProfileChange(real_name=name)
        )
        await signups.sign_up(self.ctx, ObjectId(session.user_id), self.activity)
        return session

    async def credit(self, session, amount: float) -> ObjectId:
        return await hours.credit(
            self.ctx,
            user_id=ObjectId(session.user_id),
            hours=amount,
            org_id=self.county,
            site_id=self.site,
            source="activity",
            activity_id=self.activity,
        )

    def at(self, minutes_from_start: float) -> None:
        target = self.starts_at + timedelta(minutes=minutes_from_start)
        self.ctx.clock.advance((target - self.ctx.clock.now()).total_seconds())

    async def checkin(self, session, lng=SITE[0], lat=SITE[1], **extra):
        """Checks in as the mini-program does after scanning the code shown on site."""
        scene = (await attendance.checkin_code(self.ctx, self.activity)).scene
        return await self.http.post(
            f"/mp/v1/activities/{self.activity}/checkin",
            json={"location": {"lng": lng, "lat": lat, **extra}, "scene": scene},
            headers=session.headers,
        )

    async def checkout(self, session, lng=SITE[0], lat=SITE[1]):
        return await self.http.post(
            f"/mp/v1/activities/{self.activity}/checkout",
            json={"location": {"lng": lng, "lat": lat}},
            headers=session.headers,
        )


@pytest.fixture
async def scene(ctx, http, login):
    return await Scene(ctx, http).build(login)


async def test_the_whole_flow_to_confirmed_hours_and_a_star(ctx, http, login, scene):
    volunteer = await scene.volunteer(login, "o_v1")
    scene.at(-10)
    checked_in = await scene.checkin(volunteer)
    assert checked_in.status_code == 200, checked_in.text
    again = await scene.checkin(volunteer)
    assert again.json() == checked_in.json()  # a retry, not a second check-in
    scene.at(185)
    out = await scene.checkout(volunteer)
    assert out.status_code == 200, out.text
    body = out.json()
    assert body["status"] == "pending" and body["hours"] == 3.0
    assert (await scene.checkout(volunteer)).json() == body

    pending = await http.get(
        f"/api/v1/sites/{scene.site}/hours",
        params={"status": "pending"},
        headers=scene.site_admin.headers,
    )
    assert [i["record_id"] for i in pending.json()["items"]] == [body["record_id"]]
    mine = (await http.get("/mp/v1/me/hours", headers=volunteer.headers)).json()
    assert (mine["confirmed_hours"], mine["pending_hours"], mine["star"]) == (0, 3.0, 0)

    confirmed = await http.post(
        "/api/v1/hours/confirm",
        json={"record_ids": [body["record_id"]]},
        headers=scene.site_admin.headers,
    )
    assert confirmed.json() == {"confirmed": 1}
    mine = (await http.get("/mp/v1/me/hours", headers=volunteer.headers)).json()
    assert (mine["confirmed_hours"], mine["pending_hours"]) == (3.0, 0)
    assert mine["records"][0]["status"] == "confirmed"

    # 97 more confirmed hours make the first star.
    extra = await hours.credit(
        ctx,
        user_id=ObjectId(volunteer.user_id),
        hours=97,
        org_id=scene.county,
        source="caravan",
    )
    await hours.confirm(ctx, ObjectId(scene.organiser.user_id), [str(extra)])
    assert (await http.get("/mp/v1/me/hours", headers=volunteer.headers)).json()["star"] == 1


async def test_check_in_600_m_away_is_out_of_range(scene, login):
    volunteer = await scene.volunteer(login, "o_far")
    scene.at(0)
    lng, lat = SITE
    far = await scene.checkin(volunteer, lng=lng + 600 / (111_320 * 0.8141), lat=lat)
    assert far.status_code == 422
    assert far.json()["error"]["code"] == "out_of_range"
    assert await scene.ctx.db.attendance.count_documents({}) == 0
    near = await scene.checkin(volunteer, lng=lng + 300 / (111_320 * 0.8141), lat=lat)
    assert near.status_code == 200


async def test_gcj02_locations_are_converted(ctx, http, login):
    scene = await Scene(ctx, http).build(login, radius=100)
    volunteer = await scene.volunteer(login, "o_gcj")
    scene.at(0)
    gcj_lng, gcj_lat = geo.wgs84_to_gcj02(*SITE)  # what WeChat's map gives for the same place
    misread = await scene.checkin(volunteer, lng=gcj_lng, lat=gcj_lat)
    assert misread.status_code == 422  # the same numbers taken as WGS-84 are hundreds of m off
    right = await scene.checkin(volunteer, lng=gcj_lng, lat=gcj_lat, coord_type="gcj02")
    assert right.status_code == 200
    stored = await ctx.db.attendance.find_one({})
    assert geo.distance_m(stored["checkin_location"]["coordinates"], SITE) < 1


async def test_too_little_time_earns_no_credit(scene, login):
    volunteer = await scene.volunteer(login, "o_brief")
    scene.at(60)
    await scene.checkin(volunteer)
    scene.at(150)  # 90 of 180 minutes: 50 % < 60 %
    out = (await scene.checkout(volunteer)).json()
    assert out == {"record_id": None, "hours": 0.0, "status": "not_credited"}
    assert await scene.ctx.db.hours_ledger.count_documents({}) == 0


async def test_rounding_to_half_hours_inside_the_window(ctx):
    start = ctx.clock.now()
    end = start + timedelta(hours=3)
    credited, coverage = attendance.service_hours(
        ctx, start, end, start - timedelta(hours=1), start + timedelta(minutes=140)
    )
    assert (credited, round(coverage, 3)) == (2.5, 0.778)  # arrival before start not counted


async def test_checkout_without_checkin(scene, login):
    volunteer = await scene.volunteer(login, "o_nocheckin")
    scene.at(30)
    answer = await scene.checkout(volunteer)
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "not_checked_in"


async def test_only_confirmed_volunteers_of_a_live_activity_check_in(ctx, http, scene, login):
    stranger = await login("o_stranger")
    volunteer = await scene.volunteer(login, "o_v_cancel")
    scene.at(0)
    assert (await scene.checkin(stranger)).json()["error"]["code"] == "not_signed_up"
    await signups.cancel_activity(ctx, scene.activity, reason="暴雨")
    assert (await scene.checkin(volunteer)).status_code == 409


async def test_a_forgotten_checkout_closes_at_the_end_and_is_flagged(ctx, scene, login):
    volunteer = await scene.volunteer(login, "o_forgetful")
    scene.at(0)
    await scene.checkin(volunteer)
    scene.at(180 + 61)
    assert await attendance.close_forgotten(ctx) == 1
    record = await ctx.db.attendance.find_one({})
    assert record["status"] == "auto_closed" and record["flagged"] is True
    assert record["hours"] == 3.0
    assert await attendance.close_forgotten(ctx) == 0


async def test_a_site_admin_of_another_site_cannot_confirm(ctx, http, scene, login):
    volunteer = await scene.volunteer(login, "o_v2")
    scene.at(0)
    await scene.checkin(volunteer)
    scene.at(180)
    record_id = (await scene.checkout(volunteer)).json()["record_id"]
    refused = await http.post(
        "/api/v1/hours/confirm",
        json={"record_ids": [record_id]},
        headers=scene.other_admin.headers,
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert (await ctx.db.hours_ledger.find_one({}))["status"] == "pending"
    listing = await http.get(f"/api/v1/sites/{scene.site}/hours", headers=scene.other_admin.headers)
    assert listing.status_code == 403


async def test_an_adjustment_keeps_the_record_and_the_sum_is_right(ctx, http, scene, login):
    volunteer = await scene.volunteer(login, "o_v3")
    user = ObjectId(volunteer.user_id)
    record = await scene.credit(volunteer, 3)
    await hours.confirm(ctx, ObjectId(scene.site_admin.user_id), [str(record)])
    adjusted = await http.post(
        f"/api/v1/hours/{record}/adjust",
        json={"hours": 2.5, "reason": "提前离场半小时"},
        headers=scene.site_admin.headers,
    )
    assert adjusted.json()["hours"] == 2.5
    entries = await ctx.db.hours_ledger.find({"user_id": user}).sort("at", 1).to_list(None)
    assert [(e["kind"], e["hours"]) for e in entries] == [("credit", 3), ("adjustment", -0.5)]
    assert entries[1]["reason"] == "提前离场半小时" and entries[1]["by"] is not None
    assert await hours.totals(ctx, user) == (2.5, 0)
    no_reason = await http.post(
        f"/api/v1/hours/{record}/adjust", json={"hours": 1}, headers=scene.site_admin.headers
    )
    assert no_reason.status_code == 400 and no_reason.json()["error"]["field"] == "reason"
    dispute = await http.post(
        f"/mp/v1/hours/{record}/dispute", json={"reason": "我待了三小时"}, headers=volunteer.headers
    )
    assert dispute.status_code == 201


async def test_200_concurrent_confirmations_credit_once(ctx, http, scene, login):
    volunteers = [await scene.volunteer(login, f"o_c{i}") for i in range(5)]
    ids = [str(await scene.credit(v, 2)) for v in volunteers]
    answers = await asyncio.gather(
        *[
            http.post(
                "/api/v1/hours/confirm", json={"record_ids": ids}, headers=scene.site_admin.headers
            )
            for _ in range(200)
        ]
    )
    assert all(a.status_code == 200 for a in answers)
    assert sum(a.json()["confirmed"] for a in answers) == 5
    for v in volunteers:
        assert await hours.totals(ctx, ObjectId(v.user_id)) == (2.0, 0)


async def test_the_certificate_reads_back_and_verifies(ctx, http, scene, login):
    volunteer = await scene.volunteer(login, "o_cert", name="李四")
    record = await scene.credit(volunteer, 3.5)
    await hours.confirm(ctx, ObjectId(scene.site_admin.user_id), [str(record)])
    answer = await http.get("/mp/v1/me/certificate", headers=volunteer.headers)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/pdf")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(answer.content)).pages)
    assert "李四" in text and "3.5" in text and "科学实验秀" in text
    code = text.split("证明编号：")[1].split()[0]

    verified = await http.get(f"/verify/{code}")
    assert verified.status_code == 200
    assert verified.json()["confirmed_hours"] == 3.5
    assert verified.json()["volunteer"] == "李*"
    tampered = code[:-1] + ("A" if code[-1] != "A" else "B")
    refused = await http.get(f"/verify/{tampered}")
    assert refused.status_code == 404


async def test_checkin_codes_are_signed_and_expire(ctx, http, scene, login):
    volunteer = await scene.volunteer(login, "o_scan")
    scene.at(-20)
    code = await http.get(
        f"/api/v1/activities/{scene.activity}/checkin-code", headers=scene.organiser.headers
    )
    assert code.status_code == 200
    scene_code = code.json()["scene"]
    assert len(scene_code) <= 32
    image = await http.get(code.json()["png_url"])
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")

    async def check_in_with(scene_text):
        return await http.post(
            f"/mp/v1/activities/{scene.activity}/checkin",
            json={"scene": scene_text, "location": {"lng": SITE[0], "lat": SITE[1]}},
            headers=volunteer.headers,
        )

    forged = scene_code[:-2] + ("AA" if scene_code[-2:] != "AA" else "BB")
    refused = await check_in_with(forged)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_scene"
    assert (await check_in_with(scene_code)).status_code == 200
    ctx.clock.advance(13 * 3600)
    with pytest.raises(InvalidRequest) as caught:
        attendance.read_scene(ctx, scene_code)
    assert caught.value.code == "invalid_scene"


async def test_the_mini_program_code_falls_back_to_a_plain_qr(ctx, http, scene, emulator):
    code = await attendance.checkin_code(ctx, scene.activity)
    await emulator.fault("wxacode", errcode=-1)
    png = await attendance.checkin_code_png(ctx, code.scene)
    assert png.startswith(b"\x89PNG")


ENTRY = st.one_of(
    st.tuples(st.just("credit"), st.integers(1, 16).map(lambda n: n / 2)),
    st.tuples(st.just("adjust"), st.integers(0, 16).map(lambda n: n / 2)),
    st.tuples(st.just("reverse"), st.just(0.0)),
    st.tuples(st.just("confirm"), st.just(0.0)),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(ENTRY, min_size=1, max_size=12))
async def test_ledger_totals_are_the_ledger_sum_and_never_negative(ctx, steps):
    root = await orgs.root_org(ctx)
    org = root["_id"] if root else await orgs.create_org(ctx, "省科协", "province", None)
    staff = await identity.ensure_user(ctx, "o_ledger_staff")
    await access.grant_role(ctx, staff, "org_admin", org)
    user = ObjectId()
    credits: list[ObjectId] = []
    for i, (kind, value) in enumerate(steps):
        if kind == "credit" or not credits:
            credits.append(
                await hours.credit(ctx, user_id=user, hours=value or 1.0, org_id=org,
                                   source="caravan", activity_id=ObjectId())
            )  # fmt: skip
            continue
        target = credits[i % len(credits)]
        if kind == "confirm":
            await hours.confirm(ctx, staff, [str(target)])
        else:
            amount = 0.0 if kind == "reverse" else value
            try:
                await adjustments.adjust(
                    ctx, staff, target, hours.Adjustment(hours=amount, reason="核对更正")
                )
            except Conflict as refused:  # another request above the bound waits: no change
                assert refused.code == "adjustment_pending"
        confirmed, pending = await hours.totals(ctx, user)
        entries = await ctx.db.hours_ledger.find({"user_id": user}).to_list(None)
        assert confirmed + pending == pytest.approx(sum(e["hours"] for e in entries))
        assert confirmed >= 0 and pending >= 0
        mine = await hours.my_hours(ctx, user)
        assert all(r.hours >= 0 for r in mine.records)
        assert sum(r.hours for r in mine.records) == pytest.approx(confirmed + pending)
