"""The issue's acceptance flow in a real browser: an organiser signs in through the development
scan; an activity is published; 60 volunteers sign up, check in with the code shown on site and
out through the mini-program API on the development clock; all 60 records are confirmed from
服务时长 in one action and the 首页 count drops; the roster and the year's workbook download
and open; a county admin neither sees nor reaches another county's pages."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta

import openpyxl
import pytest

from server.domain import access, activities, attendance, identity, orgs, sites

ADMIN, COUNTY_ADMIN = "t_flow_admin", "t_flow_county_admin"
VOLUNTEERS = 60
SITE = (113.65, 34.76)


@pytest.fixture
def settings_overrides():
    return {"access_token_ttl_s": 30 * 86400}  # the volunteers' tokens outlive the clock's jump


class World:
    async def build(self, ctx) -> World:
        self.root = await orgs.create_org(ctx, "测试省科学技术协会", "province", None)
        city = await orgs.create_org(ctx, "测试市科协", "city", self.root)
        self.county_a = await orgs.create_org(ctx, "甲县科协", "county", city)
        self.county_b = await orgs.create_org(ctx, "乙县科协", "county", city)
        admin, county_admin = await identity.import_users(
            ctx, [(ADMIN, "省管理员"), (COUNTY_ADMIN, "乙县管理员")]
        )
        await access.grant_role(ctx, admin, "org_admin", self.root)
        await access.grant_role(ctx, county_admin, "org_admin", self.county_b)
        self.site = await sites.create_site(
            ctx,
            sites.NewSite(
                name="甲县实验中学",
                kind="school",
                org_id=str(self.county_a),
                location=sites.LocationIn(lng=SITE[0], lat=SITE[1]),
            ),
        )
        self.starts_at = ctx.clock.now() + timedelta(days=2)
        self.activity = await activities.create_activity(
            ctx,
            activities.NewActivity(
                title="甲县天文科普夜",
                description="带领中学生观测木星",
                org_id=str(self.county_a),
                site_id=str(self.site),
                starts_at=self.starts_at,
                ends_at=self.starts_at + timedelta(hours=3),
                capacity=VOLUNTEERS,
            ),
            created_by=admin,
        )
        await activities.publish(ctx, self.activity, publisher_openid=ADMIN)
        return self

    def at(self, ctx, minutes_from_start: float) -> None:
        target = self.starts_at + timedelta(minutes=minutes_from_start)
        ctx.clock.advance((target - ctx.clock.now()).total_seconds())


async def _attend(ctx, http, login, world) -> list:
    """60 volunteers through the mini-program API: sign up, check in on site, check out."""
    people = await asyncio.gather(*(login(f"t_flow_v{n:02d}") for n in range(VOLUNTEERS)))
    path = f"/mp/v1/activities/{world.activity}"

    async def each(action: str, session, body=None) -> None:
        response = await http.post(f"{path}/{action}", json=body, headers=session.headers)
        assert response.status_code in (200, 201), response.text

    await asyncio.gather(*(each("signup", p) for p in people))
    world.at(ctx, -5)
    scene = (await attendance.checkin_code(ctx, world.activity)).scene
    place = {"lng": SITE[0], "lat": SITE[1]}
    await asyncio.gather(*(each("checkin", p, {"location": place, "scene": scene}) for p in people))
    world.at(ctx, 3 * 60 + 5)
    await asyncio.gather(*(each("checkout", p, {"location": place}) for p in people))
    return people


async def test_sixty_volunteers_confirmed_in_one_action(ctx, http, login, new_page, sign_in, shot):
    world = await World().build(ctx)
    people = await _attend(ctx, http, login, world)
    pending = {"activity_id": world.activity, "kind": "credit", "status": "pending"}
    assert await ctx.db.hours_ledger.count_documents(pending) == VOLUNTEERS

    page = await new_page()
    await sign_in(page, ADMIN)
    assert await page.locator('[data-count="pending_hours"]').inner_text() == str(VOLUNTEERS)
    await shot(page, "flow-01-home-pending")

    await page.locator(".sidebar a", has_text="服务时长").click()
    await page.wait_for_url("**/console/hours")
    group = page.locator(f'.hours-group[data-activity="{world.activity}"]')
    assert await group.locator('input[name="record_ids"]').count() == VOLUNTEERS
    assert await page.locator("#confirm-button").is_disabled()
    await page.locator("#select-all").check()
    assert await page.locator("#selected-count").inner_text() == f"已选 {VOLUNTEERS} 条"
    await shot(page, "flow-02-hours-selected")
    await page.locator("#confirm-button").click()
    await page.locator(".alert-ok", has_text=f"已确认 {VOLUNTEERS} 条").wait_for()
    assert await page.locator(".hours-group").count() == 0
    confirmed = {**pending, "status": "confirmed"}
    assert await ctx.db.hours_ledger.count_documents(confirmed) == VOLUNTEERS
    await shot(page, "flow-03-hours-confirmed")

    await page.goto("/console/")
    assert await page.locator('[data-count="pending_hours"]').inner_text() == "0"

    # A volunteer disputes their record in the mini-program; it is upheld from 服务时长.
    mine = (await http.get("/mp/v1/me/hours", headers=people[0].headers)).json()
    record_id = mine["records"][0]["record_id"]
    disputed = await http.post(
        f"/mp/v1/hours/{record_id}/dispute", json={"reason": "我提前半小时离开"},
        headers=people[0].headers,
    )  # fmt: skip
    assert disputed.status_code == 201, disputed.text
    await page.goto("/console/")
    assert await page.locator('[data-count="disputes"]').inner_text() == "1"
    assert await page.locator("#panel-disputes", has_text="我提前半小时离开").count() == 1
    await page.goto("/console/hours")
    row = page.locator("#disputes tr", has_text="我提前半小时离开")
    await row.locator('input[name="hours"]').fill("2.5")
    await row.locator('input[name="reason"]').fill("核实签退时间后更正")
    await shot(page, "flow-04-dispute")
    await row.locator("button", has_text="提交").click()
    await page.locator(".alert-ok", has_text="已采纳异议").wait_for()
    assert await page.locator("#disputes").count() == 0
    await page.goto("/console/")
    assert await page.locator('[data-count="disputes"]').inner_text() == "0"
    mine = (await http.get("/mp/v1/me/hours", headers=people[0].headers)).json()
    assert mine["confirmed_hours"] == 2.5
    await page.goto(f"/console/hours/records/{record_id}")
    actions = await page.locator("#history tr[data-action]").evaluate_all(
        "rows => rows.map(r => r.dataset.action)"
    )
    assert actions[:2] == ["created", "confirmed"]
    assert {"adjusted", "disputed", "resolved"} <= set(actions)
    await shot(page, "flow-05-record-history")

    await page.goto(f"/console/activities/{world.activity}")
    async with page.expect_download() as download_info:
        await page.locator("a", has_text="下载名单").click()
    roster = openpyxl.load_workbook(
        io.BytesIO((await (await download_info.value).path()).read_bytes())
    )
    assert roster["已确认"].max_row == VOLUNTEERS + 1

    await page.locator(".sidebar a", has_text="统计").click()
    await page.wait_for_url("**/console/stats")
    hours = await page.locator('[data-kpi="hours"]').inner_text()
    assert float(hours) == 3 * VOLUNTEERS - 0.5
    assert await page.locator("#counties-table tbody tr").count() == 2
    await page.locator('[data-stats-chart="counties"] canvas').wait_for()
    await page.locator('[data-chart="months"] canvas').wait_for()
    await shot(page, "flow-06-stats-year")
    async with page.expect_download() as download_info:
        await page.locator("#download-xlsx").click()
    download = await download_info.value
    assert download.suggested_filename.endswith(".xlsx")
    book = openpyxl.load_workbook(io.BytesIO((await download.path()).read_bytes()))
    summary = {row[0]: row[1] for row in book["总览"].iter_rows(min_row=2, values_only=True)}
    assert summary["志愿服务时长"] == 3 * VOLUNTEERS - 0.5
    api = await http.get(
        "/api/v1/stats/annual",
        params={"format": "xlsx", "org_id": str(world.root)},
        headers=(await login(ADMIN)).headers,
    )
    assert (await download.path()).read_bytes()[:2] == api.content[:2] == b"PK"

    await page.locator(".subperiods a", has_text="第一季度").click()
    await page.wait_for_url("**from=*")
    assert "至" in await page.locator("#stats-period").inner_text()


async def test_a_county_admin_is_kept_to_their_county(ctx, new_page, sign_in, shot):
    world = await World().build(ctx)
    page = await new_page()
    await sign_in(page, COUNTY_ADMIN)
    await page.goto("/console/stats")
    assert "乙县科协" in await page.locator("#stats-period").inner_text()
    await page.goto("/console/hours")
    assert await page.locator(".hours-group").count() == 0
    for path in (
        f"/console/stats?org_id={world.county_a}",
        f"/console/stats/report.xlsx?org_id={world.root}",
        f"/console/activities/{world.activity}",
        f"/console/sites/{world.site}",
    ):
        response = await page.goto(path)
        assert response.status == 403, path
        assert await page.locator(".error-card h1").inner_text() == "没有权限"
    await shot(page, "flow-07-county-forbidden")
