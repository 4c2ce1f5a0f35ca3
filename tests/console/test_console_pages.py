"""The console's work pages in a real browser: 站点 (register, edit, search, name an admin),
活动 (create with the API's messages beside the fields, publish, the roster filled through the
mini-program API, its workbook, the check-in code, cancel with a reason), 组织与人员 (grant a
role to a user found by search, revoke it), and a county admin kept to their county."""

from __future__ import annotations

import io
from datetime import timedelta

import openpyxl
import pytest

from server.clock import SHANGHAI
from server.domain import access, activities, identity, orgs, sites

ADMIN, COUNTY_ADMIN = "t_province_admin", "t_county_admin"
CANDIDATE = "t_candidate"


class World:
    """A province with two counties; a site and an activity in the second county."""

    async def build(self, ctx, emulator) -> World:
        self.root = await orgs.create_org(ctx, "测试省科学技术协会", "province", None)
        city = await orgs.create_org(ctx, "测试市科协", "city", self.root)
        self.county_a = await orgs.create_org(ctx, "甲县科协", "county", city)
        self.county_b = await orgs.create_org(ctx, "乙县科协", "county", city)
        self.admin, self.county_admin, self.candidate = await identity.import_users(
            ctx, [(ADMIN, "省管理员"), (COUNTY_ADMIN, "甲县管理员"), (CANDIDATE, "王小明")]
        )
        code = await emulator.phonecode(CANDIDATE, "13800000001")
        await identity.bind_phone(ctx, identity.Principal(self.candidate, CANDIDATE), code)
        await access.grant_role(ctx, self.admin, "org_admin", self.root)
        await access.grant_role(ctx, self.county_admin, "org_admin", self.county_a)
        self.site_b = await sites.create_site(
            ctx,
            sites.NewSite(
                name="乙县第一小学",
                kind="school",
                org_id=str(self.county_b),
                location=sites.LocationIn(lng=113.7, lat=34.7),
            ),
        )
        start = ctx.clock.now() + timedelta(days=3)
        self.activity_b = await activities.create_activity(
            ctx,
            activities.NewActivity(
                title="乙县防诈骗讲座",
                description="讲座",
                org_id=str(self.county_b),
                site_id=str(self.site_b),
                starts_at=start,
                ends_at=start + timedelta(hours=2),
                capacity=30,
            ),
            created_by=None,
        )
        return self


@pytest.fixture
async def world(ctx, emulator):
    return await World().build(ctx, emulator)


def local_input(moment) -> str:
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")


async def test_a_site_and_an_activity_from_registration_to_cancellation(
    world, ctx, http, login, new_page, sign_in, shot
):
    page = await new_page()
    await sign_in(page, ADMIN)
    links = await page.locator(".sidebar a").evaluate_all("links => links.map(a => a.pathname)")
    assert {"/console/orgs", "/console/sites", "/console/activities"} <= set(links)

    # 站点: register one, edit it, name an admin found by name.
    await page.goto("/console/sites")
    assert await page.locator('a[href="/console/sites/map"]').count() == 1
    await page.locator("a", has_text="登记站点").click()
    await page.fill('input[name="name"]', "甲县实验中学")
    await page.select_option('select[name="kind"]', "school")
    await page.fill('input[name="lng"]', "113.65")
    await page.fill('input[name="lat"]', "34.76")
    await page.fill('input[name="address"]', "甲县人民路 1 号")
    await page.select_option('select[name="org_id"]', str(world.county_a))
    await shot(page, "pages-01-site-new")
    await page.locator("button", has_text="登记").click()
    await page.wait_for_url("**/console/sites/*")
    site_id = page.url.rsplit("/", 1)[1]
    assert await page.locator("h1").inner_text() == "甲县实验中学"

    await page.fill('input[name="name"]', "甲县实验中学（东校区）")
    await page.fill('input[name="audience"]', "初中生")
    await page.locator("button", has_text="保存").click()
    await page.locator(".alert-ok").wait_for()
    saved = await sites.get_site(ctx, site_id)
    assert (saved.name, saved.audience) == ("甲县实验中学（东校区）", "初中生")

    await page.fill("#people-q", "王小")
    await page.locator("#people-q").press("Enter")
    await page.locator("#people-results td", has_text="138****0001").wait_for()
    await page.locator("#people-results button", has_text="设为站点管理员").click()
    await page.locator("#site-admins td", has_text="王小明").wait_for()
    assert (await sites.get_site(ctx, site_id)).admin_ids == [str(world.candidate)]
    await shot(page, "pages-02-site-detail")

    await page.goto("/console/sites")
    assert await page.locator("#sites-table tbody tr").count() == 2
    await page.fill('.filters input[name="name"]', "实验")
    await page.locator(".filters button").click()
    await page.wait_for_url("**name=%E5%AE%9E%E9%AA%8C**")
    assert await page.locator("#sites-table tbody tr").count() == 1
    await shot(page, "pages-03-sites-list")

    # 活动: the domain's refusal beside its field, then a draft, published.
    start = ctx.clock.now() + timedelta(days=2)
    await page.goto("/console/activities/new")
    await page.fill('input[name="title"]', "甲县天文科普夜")
    await page.fill('textarea[name="description"]', "带领中学生观测木星")
    await page.select_option('select[name="org_id"]', str(world.county_a))
    await page.select_option('select[name="site_id"]', site_id)
    await page.fill('input[name="starts_at"]', local_input(start))
    await page.fill('input[name="ends_at"]', local_input(start - timedelta(hours=1)))
    await page.fill('input[name="capacity"]', "2")
    await page.fill('input[name="tags"]', "天文，青少年")
    await page.locator("button", has_text="保存草稿").click()
    error = page.locator('.field-error[data-field="ends_at"]')
    assert await error.inner_text() == "结束时间须晚于开始时间"
    await shot(page, "pages-04-activity-refused")
    await page.fill('input[name="ends_at"]', local_input(start + timedelta(hours=2)))
    await page.locator("button", has_text="保存草稿").click()
    await page.wait_for_url("**/console/activities/*")
    activity_id = page.url.rsplit("/", 1)[1]
    assert await page.locator("#activity-status").inner_text() == "草稿"
    await page.locator("button", has_text="发布").click()
    await page.locator(".alert-ok", has_text="已发布").wait_for()
    assert await page.locator("#activity-status").inner_text() == "已发布"

    # Three volunteers sign up in the mini-program: two seats, one on the waitlist.
    volunteers = [await login(f"t_volunteer_{n}") for n in range(3)]
    for volunteer in volunteers:
        signed = await http.post(
            f"/mp/v1/activities/{activity_id}/signup", headers=volunteer.headers
        )
        assert signed.status_code in (200, 201), signed.text
    await page.reload()
    assert await page.locator('[data-count="confirmed"]').inner_text() == "2"
    assert await page.locator("#roster-confirmed tbody tr").count() == 2
    assert await page.locator("#roster-waitlist tbody tr").count() == 1
    await shot(page, "pages-05-activity-roster")

    async with page.expect_download() as download_info:
        await page.locator("a", has_text="下载名单").click()
    download = await download_info.value
    book = openpyxl.load_workbook(io.BytesIO((await download.path()).read_bytes()))
    assert book.sheetnames == ["概况", "已确认", "候补", "待审核"]
    assert [row[1:] for row in book["概况"].iter_rows(min_row=2, values_only=True)] == [(2, 1, 0)]
    assert book["已确认"].max_row == 3

    projector = await new_page()
    await sign_in(projector, ADMIN)
    await projector.goto(f"/console/activities/{activity_id}/checkin")
    code = projector.locator("img.projector-code")
    assert (await code.get_attribute("src")).startswith("/checkin-codes/")
    await projector.wait_for_function("document.querySelector('img.projector-code').complete")
    assert await code.evaluate("img => img.naturalWidth") > 0
    refresh = await projector.locator('meta[http-equiv="refresh"]').get_attribute("content")
    assert 10 <= int(refresh) < ctx.settings.checkin_code_ttl_s
    await shot(projector, "pages-06-checkin-code")

    await page.goto("/console/activities?status=published")
    assert "甲县天文科普夜" in await page.locator("#activities-table").inner_text()
    assert "乙县防诈骗讲座" not in await page.locator("#activities-table").inner_text()
    await page.select_option('.filters select[name="status"]', "draft")
    await page.locator("#activities-table", has_text="乙县防诈骗讲座").wait_for()
    await shot(page, "pages-07-activities-list")

    # Cancel with a reason: every sign-up ends.
    await page.goto(f"/console/activities/{activity_id}")
    await page.fill("#cancel-reason", "因天气原因取消")
    await page.locator("#cancel-form button").click()
    await page.locator(".alert-ok", has_text="已取消").wait_for()
    assert await page.locator("#activity-status").inner_text() == "已取消"
    await shot(page, "pages-08-activity-cancelled")
    for volunteer in volunteers:
        mine = (await http.get("/mp/v1/me/signups", headers=volunteer.headers)).json()
        assert [s["status"] for s in mine["items"]] == ["cancelled"]


async def test_grant_a_role_to_a_user_found_by_phone_and_revoke_it(
    world, ctx, new_page, sign_in, shot
):
    page = await new_page()
    await sign_in(page, ADMIN)
    await page.goto("/console/orgs")
    tree = page.locator(".org-tree li")
    assert await tree.count() == 4
    await page.locator(".org-tree a", has_text="甲县科协").click()
    await page.wait_for_url(f"**org_id={world.county_a}")
    assert "甲县管理员" in await page.locator("#holders tbody").inner_text()

    await page.fill('.grant input[name="q"]', "138****0001")
    await page.locator(".grant button", has_text="查找").click()
    found = page.locator("#people-results tbody tr")
    await found.first.wait_for()
    assert "王小明" in await found.first.inner_text()
    await found.first.locator('select[name="role"]').select_option("team_leader")
    await shot(page, "pages-09-orgs-search")
    await found.first.locator("button", has_text="授予").click()
    await page.locator(".alert-ok", has_text="已授予").wait_for()
    row = page.locator(f'#holders tr[data-user="{world.candidate}"][data-role="team_leader"]')
    assert "队长" in await row.inner_text()
    assert {g["role"] for g in await access.grants_of(ctx, world.candidate)} == {"team_leader"}
    await shot(page, "pages-10-orgs-granted")

    await row.locator("button", has_text="撤销").click()
    await page.locator(".alert-ok", has_text="已撤销").wait_for()
    assert await row.count() == 0
    assert await access.grants_of(ctx, world.candidate) == []


async def test_a_county_admin_cannot_see_or_reach_another_countys_pages(
    world, new_page, sign_in, shot
):
    page = await new_page()
    await sign_in(page, COUNTY_ADMIN)
    await page.goto("/console/sites")
    assert await page.locator("#sites-table").count() == 0  # the other county's site is not listed
    await page.goto("/console/activities")
    assert "乙县防诈骗讲座" not in await page.locator("main").inner_text()
    await page.goto("/console/orgs")
    assert await page.locator(".org-tree li").count() == 1

    for path in (
        f"/console/sites/{world.site_b}",
        f"/console/activities/{world.activity_b}",
        f"/console/activities/{world.activity_b}/roster.xlsx",
        f"/console/orgs?org_id={world.county_b}",
        f"/console/activities?org_id={world.county_b}",
    ):
        response = await page.goto(path)
        assert response.status == 403, path
        assert await page.locator(".error-card h1").inner_text() == "没有权限"
        assert "没有在该组织执行此操作的权限" in await page.locator(".error-message").inner_text()
    await shot(page, "pages-11-county-forbidden")


async def test_patch_a_site_validates_as_registering_one(world, ctx, http, login):
    admin = await login(ADMIN)
    path = f"/api/v1/sites/{world.site_b}"
    hours = [{"weekday": 1, "start": "17:00", "end": "08:00"}]
    refused = await http.patch(path, json={"open_hours": hours}, headers=admin.headers)
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "code": "invalid_request", "message": "开放时间的开始须早于结束", "field": "open_hours[0]"
    }  # fmt: skip
    blank = await http.patch(path, json={"name": "  "}, headers=admin.headers)
    assert blank.json()["error"]["field"] == "name"
    changed = await http.patch(
        path, json={"name": "乙县实验小学", "address": "乙县文化路"}, headers=admin.headers
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["name"], changed.json()["address"]) == ("乙县实验小学", "乙县文化路")
    assert (await sites.get_site(ctx, world.site_b)).kind == "school"  # untouched
