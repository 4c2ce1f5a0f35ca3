"""科普大篷车 in the console, in a real browser: a county dispatcher starts a plan from the page,
watches its progress bar reach done, sees a line per caravan-day on the map and a table per
caravan-day, pins a visit to another day and re-plans, publishes (the crew column appears), and
logs the day's trip, which waits for the site's confirmation."""

from __future__ import annotations

from datetime import timedelta

from server.domain import access, caravans, identity, orgs, planning, sites

DISPATCHER = "t_caravan_dispatcher"
DEPOT = (113.80, 35.46)
ROUTE_SERIES = """el => echarts.getInstanceByDom(el).getOption().series
  .filter(s => s && s.id.startsWith("route:")).length"""


class World:
    """A county with a depot, two caravans, five schools asking for a visit next week, and its
    dispatcher."""

    async def build(self, ctx) -> World:
        root = await orgs.create_org(ctx, "河南省科学技术协会", "province", None)
        city = await orgs.create_org(ctx, "新乡市科协", "city", root)
        self.county = await orgs.create_org(ctx, "辉县市科协", "county", city)
        user = await identity.ensure_user(ctx, DISPATCHER)
        await access.grant_role(ctx, user, "dispatcher", self.county)
        depot = await caravans.create_depot(
            ctx,
            caravans.NewDepot(
                name="辉县市科技馆车场",
                org_id=str(self.county),
                location=sites.LocationIn(lng=DEPOT[0], lat=DEPOT[1]),
            ),
        )
        self.caravans = [
            str(
                await caravans.create_caravan(
                    ctx,
                    caravans.NewCaravan(
                        name=f"辉县{n}号大篷车", plate=f"豫G0000{n}", vehicle_type="Ⅱ",
                        depot_id=str(depot), org_id=str(self.county), crew_size=3,
                    ),
                )
            )
            for n in (1, 2)
        ]  # fmt: skip
        today = ctx.clock.local_now().date()
        self.monday = today + timedelta(days=7 - today.weekday() + 7)
        hours = [sites.OpenHours(weekday=d, start="08:00", end="17:00") for d in range(1, 6)]
        for n in range(5):
            site_id = await sites.create_site(
                ctx,
                sites.NewSite(
                    name=f"辉县市第{n + 1}小学",
                    kind="school",
                    org_id=str(self.county),
                    location=sites.LocationIn(lng=DEPOT[0] + 0.04 * (n - 2), lat=DEPOT[1] + 0.03),
                    open_hours=hours,
                ),
            )
            await caravans.create_request(
                ctx,
                caravans.NewVisitRequest(
                    site_id=str(site_id),
                    earliest_date=self.monday,
                    latest_date=self.monday + timedelta(days=4),
                    duration_min=90,
                ),
            )
        return self


async def until_solved(page) -> None:
    """The progress fragment polls until the plan is solved, then the page reloads."""
    await page.locator('#plan-progress[data-status="done"]').wait_for(
        state="attached", timeout=60_000
    )
    await page.locator("#plan-map[data-routes] canvas").first.wait_for()


async def test_a_dispatcher_plans_pins_replans_publishes_and_logs_a_trip(
    ctx, new_page, sign_in, shot
):
    world = await World().build(ctx)
    page = await new_page()
    await sign_in(page, DISPATCHER)
    await page.locator(".sidebar a", has_text="排程").click()
    await page.wait_for_url("**/console/plans")
    await page.locator("a", has_text="新建计划").click()

    # Start a plan for next week's five days with every caravan and open request.
    await page.locator("#start_date").fill(world.monday.isoformat())
    await page.locator("#end_date").fill((world.monday + timedelta(days=4)).isoformat())
    await page.locator("#time_limit_s").fill("1")
    await shot(page, "caravans-plan-new")
    await page.locator("button", has_text="开始排程").click()
    await page.wait_for_url("**/console/plans/*")
    plan_id = page.url.rsplit("/", 1)[1]
    assert await page.locator("#plan-progress").get_attribute("data-status") in (
        "queued", "running", "done",
    )  # fmt: skip
    await until_solved(page)

    plan = await planning.get_plan(ctx, plan_id)
    assert plan.status == "done" and plan.routes and not plan.unassigned
    chart = page.locator("#plan-map")
    assert await chart.evaluate(ROUTE_SERIES) == len(plan.routes)
    assert await page.locator("#plan-days tbody").count() == len(plan.routes)
    assert await page.locator('[data-total="visits"]').inner_text() == "5"
    assert await page.locator('[data-total="unassigned"]').inner_text() == "0"
    await shot(page, "caravans-plan-map")

    # Pin one visit to the other caravan on a day it is not on, and plan again.
    route = plan.routes[0]
    moved = route.stops[0].request_id
    other = next(c for c in world.caravans if c != route.caravan_id)
    day = next(
        d for d in planning.working_days(await planning.get_plan_doc(ctx, plan_id))
        if d != route.date
    )  # fmt: skip
    await page.locator("#pin-request").select_option(moved)
    await page.locator("#pin-caravan").select_option(other)
    await page.locator("#pin-date").select_option(day)
    await page.locator("#pin-form button").click()
    await page.locator(".alert-ok", has_text="已指定").wait_for()
    assert await page.locator("#plan-edits tbody tr").count() == 1
    await page.locator("button", has_text="重新规划").click()
    await page.wait_for_url(f"**/console/plans/{plan_id}?done=replanned")
    await until_solved(page)
    plan = await planning.get_plan(ctx, plan_id)
    assert plan.runs == 2
    placed = {s.request_id: (r.caravan_id, r.date) for r in plan.routes for s in r.stops}
    assert placed[moved] == (other, day)
    assert await chart.evaluate(ROUTE_SERIES) == len(plan.routes)

    # Publish: every visit shows its crew, none joined yet.
    await page.locator("button", has_text="发布").click()
    await page.locator(".alert-ok", has_text="计划已发布").wait_for()
    assert await page.locator(".crew").count() == 5
    assert await page.locator(".crew .badge", has_text="缺 3 人").count() == 5
    await shot(page, "caravans-plan-published")

    # The caravan's day logged: 42 km, one visit, waiting for the school.
    await page.locator(".sidebar a", has_text="出车记录").click()
    await page.wait_for_url("**/console/trips")
    await page.locator("#t-caravan").select_option(other)
    await page.locator("#t-start").fill("1000")
    await page.locator("#t-end").fill("1042")
    await page.locator("#t-request-0").select_option(moved)
    await page.locator("#t-people-0").fill("120")
    await page.locator("#new-trip button").click()
    await page.wait_for_url("**/console/trips?done=logged")
    row = page.locator("#trips-table tbody tr").first
    assert "42.0" in await row.inner_text()
    assert await row.locator("[data-waiting]").get_attribute("data-waiting") == "1"
    assert await row.locator("[data-confirmed]").get_attribute("data-confirmed") == "0"
    await shot(page, "caravans-trips")

    # The other pages of the caravans: requests (all scheduled now) and the fleet.
    await page.goto("/console/visit-requests?status=scheduled")
    assert await page.locator("#requests-table tbody tr").count() == 5
    await shot(page, "caravans-requests")
    await page.goto("/console/fleet")
    assert await page.locator("#caravans-table tbody tr").count() == 2
    await shot(page, "caravans-fleet")


async def test_the_dispatchers_pages_fit_a_tablet(ctx, new_page, sign_in):
    """At 768 px (a tablet held upright) no page is wider than the screen: a wide table scrolls
    inside its card, the page itself does not."""
    await World().build(ctx)
    page = await new_page()
    await page.set_viewport_size({"width": 768, "height": 1024})
    await sign_in(page, DISPATCHER)
    paths = await page.locator(".sidebar a").evaluate_all("links => links.map(a => a.pathname)")
    assert "/console/visit-requests" in paths and "/console/kpis" in paths
    for path in paths:
        response = await page.goto(path)
        assert response.status == 200, path
        overflow = await page.evaluate(
            "() => document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, f"{path} is {overflow} px wider than the screen"
