"""The console's frame in a real browser: signing in (the development form, and the scan the
mini-program confirms), the 首页 with the counts of data made through the domain, signing out,
a revoked role and an idle session ending at once, refusals and the 403 and 404 pages; plus the
HTTP rules under the pages (XSRF, CSP, redirects) checked without a browser."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest
from tornado.web import decode_signed_value

from server.app import make_app
from server.clock import SHANGHAI
from server.domain import access, activities, console_sessions, hours, identity, orgs, sites
from server.domain.errors import NotFound

ADMIN, COUNTY_ADMIN, VOLUNTEER = "t_province_admin", "t_county_admin", "t_volunteer"


class World:
    """A province with two counties, an activity in each this month, pending hours."""

    async def build(self, ctx) -> World:
        self.root = await orgs.create_org(ctx, "测试省科学技术协会", "province", None)
        city = await orgs.create_org(ctx, "测试市科协", "city", self.root)
        self.county_a = await orgs.create_org(ctx, "甲县科协", "county", city)
        self.county_b = await orgs.create_org(ctx, "乙县科协", "county", city)
        self.admin = await identity.ensure_user(ctx, ADMIN)
        self.county_admin = await identity.ensure_user(ctx, COUNTY_ADMIN)
        await access.grant_role(ctx, self.admin, "org_admin", self.root)
        await access.grant_role(ctx, self.county_admin, "org_admin", self.county_a)
        start = ctx.clock.now() + timedelta(minutes=30)
        # Near the end of a month the activities may fall in the next: count what should show.
        self.this_month = start.astimezone(SHANGHAI).month == ctx.clock.local_now().month
        self.activity_a = await self._activity(ctx, self.county_a, "甲县天文科普夜", start)
        self.activity_b = await self._activity(ctx, self.county_b, "乙县防诈骗讲座", start)
        for n, (activity, org, site) in enumerate(
            [self.activity_a] * 3 + [self.activity_b] * 2
        ):  # fmt: skip
            user = await identity.ensure_user(ctx, f"t_helper_{n}")
            await hours.credit(
                ctx, user_id=user, hours=2.5, org_id=org, source="activity",
                activity_id=activity, site_id=site,
            )  # fmt: skip
        return self

    async def _activity(self, ctx, county, title, start):
        site = await sites.create_site(
            ctx,
            sites.NewSite(
                name=f"{title[:2]}第一小学",
                kind="school",
                org_id=str(county),
                location=sites.LocationIn(lng=113.65, lat=34.76),
            ),
        )
        activity = await activities.create_activity(
            ctx,
            activities.NewActivity(
                title=title,
                description="面向中小学生的科普活动",
                org_id=str(county),
                site_id=str(site),
                starts_at=start,
                ends_at=start + timedelta(hours=2),
                capacity=30,
            ),
            created_by=None,
        )
        await activities.publish(ctx, activity, publisher_openid=ADMIN)
        return activity, county, site


@pytest.fixture
async def world(ctx):
    return await World().build(ctx)


async def count(page, name: str) -> int:
    return int(await page.locator(f'[data-count="{name}"]').inner_text())


async def session_cookie(page) -> str:
    cookies = await page.context.cookies()
    return next(c["value"] for c in cookies if c["name"] == "ikepu_console")


# -- in the browser ---------------------------------------------------------------------------


async def test_sign_in_see_the_dashboard_and_sign_out(world, ctx, http, new_page, sign_in, shot):
    page = await new_page()
    await page.goto("/console/login")
    await page.locator("img.login-code").wait_for()
    assert await page.locator("img.login-code").evaluate("img => img.naturalWidth") > 0
    await shot(page, "01-login")

    await sign_in(page, ADMIN)
    assert await page.title() == "首页 · i科普 ikepu 管理台"
    assert await page.locator(".sidebar a.active").inner_text() == "首页"
    links = await page.locator(".sidebar a").evaluate_all("links => links.map(a => a.pathname)")
    assert links[0] == "/console/"
    assert await count(page, "activities") == (2 if world.this_month else 0)
    assert await count(page, "pending_hours") == 5
    pending = page.locator("#panel-pending tbody tr")
    assert await pending.count() == 2
    assert "甲县天文科普夜" in await pending.first.inner_text()  # the oldest first
    assert await page.locator('[data-kpi="activities"]').inner_text() == "2"
    await page.locator(".chart canvas").first.wait_for()
    await shot(page, "02-dashboard-province")

    cookie = await session_cookie(page)
    await page.locator("button", has_text="退出登录").click()
    await page.wait_for_url("**/console/login")
    await shot(page, "03-signed-out")
    response = await http.get("/console/", headers={"Cookie": f"ikepu_console={cookie}"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/login"


async def test_a_volunteer_without_a_staff_role_is_refused(world, new_page, sign_in, shot):
    page = await new_page()
    await sign_in(page, VOLUNTEER, expect_home=False)
    assert page.url.endswith("/console/login/development")
    assert console_sessions.REFUSAL in await page.locator(".alert-error").inner_text()
    assert "ikepu_console" not in {c["name"] for c in await page.context.cookies()}
    await shot(page, "04-volunteer-refused")
    await page.goto("/console/")
    assert page.url.endswith("/console/login")


async def test_a_county_admin_sees_their_county_and_a_403_beyond_it(world, new_page, sign_in, shot):
    page = await new_page()
    await sign_in(page, COUNTY_ADMIN)
    assert "甲县科协" in await page.locator(".page-head").inner_text()
    assert await count(page, "activities") == (1 if world.this_month else 0)
    assert await count(page, "pending_hours") == 3
    await shot(page, "05-dashboard-county")

    response = await page.goto(f"/console/?org_id={world.county_b}")
    assert response.status == 403
    assert await page.locator(".error-card h1").inner_text() == "没有权限"
    assert await page.locator(".error-message").inner_text() == "没有在该组织执行此操作的权限"
    assert await page.locator(".sidebar a").count() >= 1  # still the console's frame
    await shot(page, "06-forbidden-other-county")

    response = await page.goto("/console/no-such-page")
    assert response.status == 404
    assert await page.locator(".error-card h1").inner_text() == "页面不存在"
    await shot(page, "07-not-found")


async def test_the_scan_confirmed_in_the_mini_program_signs_the_page_in(
    world, ctx, http, login, new_page, shot
):
    page = await new_page()
    secret = make_app(ctx).settings["cookie_secret"]

    async def nonce() -> str:
        cookies = await page.context.cookies()
        value = next(c["value"] for c in cookies if c["name"] == "ikepu_console_login")
        return decode_signed_value(secret, "ikepu_console_login", value).decode()

    await page.goto("/console/login")
    volunteer = await login(VOLUNTEER)
    refused = await http.post(f"/mp/v1/console-login/{await nonce()}", headers=volunteer.headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == console_sessions.REFUSAL
    await page.locator(".login-status .alert-error").wait_for()  # the poll shows it
    await shot(page, "08-scan-refused")

    await page.goto("/console/login")
    admin = await login(ADMIN)
    scanned = await nonce()
    confirmed = await http.post(f"/mp/v1/console-login/{scanned}", headers=admin.headers)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json() == {"status": "confirmed"}
    await page.wait_for_url("**/console/", timeout=10_000)
    assert await count(page, "pending_hours") == 5
    again = await http.post(f"/mp/v1/console-login/{scanned}", headers=admin.headers)
    assert again.status_code in (404, 409)  # used: the page took its session


async def test_a_revoked_role_and_eight_idle_hours_end_the_session(world, ctx, new_page, sign_in):
    page = await new_page()
    await sign_in(page, COUNTY_ADMIN)
    await access.revoke_role(ctx, world.county_admin, "org_admin", world.county_a)
    await page.reload()
    assert page.url.endswith("/console/login")

    await access.grant_role(ctx, world.county_admin, "org_admin", world.county_a)
    await sign_in(page, COUNTY_ADMIN)
    ctx.clock.advance(7 * 3600)
    await page.reload()
    assert page.url.endswith("/console/")  # in use: the idle time started again
    ctx.clock.advance(8 * 3600 + 60)
    await page.reload()
    assert page.url.endswith("/console/login")


# -- the HTTP rules under the pages -----------------------------------------------------------


async def test_console_responses_carry_the_security_headers(http):
    response = await http.get("/console/login")
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert 'name="openid"' in response.text
    assert "<script>" not in response.text and " onclick=" not in response.text
    assert (await http.get("/console/static/vendor/htmx/htmx.min.js")).status_code == 200


async def test_pages_need_a_session_and_forms_their_xsrf_token(http):
    response = await http.get("/console/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/login"
    forged = await http.post("/console/logout", data={})
    assert forged.status_code == 403
    assert "页面已过期" in forged.text
    assert (await http.get("/console/nowhere")).status_code == 404


async def test_the_development_form_exists_only_with_the_emulator(ctx, http):
    attempt = await console_sessions.begin(ctx)
    emulated = ctx.settings
    ctx.settings = msgspec.structs.replace(emulated, wechat_appid="wx1", wechat_secret="s")
    try:
        page = await http.get("/console/login")
        assert 'name="openid"' not in page.text
        with pytest.raises(NotFound):
            await console_sessions.development_scan(ctx, attempt.nonce, ADMIN)
    finally:
        ctx.settings = emulated
