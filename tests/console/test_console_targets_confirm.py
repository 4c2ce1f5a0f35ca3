"""Caravan targets, a school's confirmation and a withdrawn visit in a real browser: the
association sets a caravan's year target on 指标 and sees its progress (a dispatcher sees it
without the form); a site's admin confirms on 出车记录 the visit logged at their site (and sees
no other site's); a school cancels a visit a published plan scheduled, on 走访申请."""

from __future__ import annotations

from bson import ObjectId
from test_caravans import World, offset

from server.domain import access, activities, caravans, identity, orgs, sites

HERE = sites.LocationIn(lng=113.8, lat=35.46)


async def county_with_fleet(ctx):
    root = await orgs.create_org(ctx, "河南省科学技术协会", "province", None)
    city = await orgs.create_org(ctx, "新乡市科协", "city", root)
    county = await orgs.create_org(ctx, "辉县市科协", "county", city)
    depot = await caravans.create_depot(
        ctx, caravans.NewDepot(name="辉县市车场", org_id=str(county), location=HERE)
    )
    fleet = []
    for n in (1, 2):
        new = caravans.NewCaravan(name=f"辉县{n}号车", plate=f"豫G3000{n}", vehicle_type="Ⅱ",
                                  depot_id=str(depot), org_id=str(county))  # fmt: skip
        fleet.append(await caravans.create_caravan(ctx, new))
    return city, county, fleet


async def school(ctx, county, name: str, admin_openid: str) -> tuple[ObjectId, ObjectId]:
    site = await sites.create_site(
        ctx, sites.NewSite(name=name, kind="school", org_id=str(county), location=HERE)
    )
    admin = await identity.ensure_user(ctx, admin_openid)
    await sites.add_admin(ctx, site, admin)
    return site, admin


async def logged_visits(ctx, caravan, day, *site_ids) -> tuple[str, list[str]]:
    """One trip of 80 km visiting each site once (120 people each): the trip and its requests."""
    requests = []
    for site in site_ids:
        new = caravans.NewVisitRequest(
            site_id=str(site), earliest_date=day, latest_date=day, duration_min=90
        )
        requests.append(str(await caravans.create_request(ctx, new)))
    trip = caravans.NewTrip(
        caravan_id=str(caravan), date=day, odometer_start_km=1000, odometer_end_km=1080,
        visits=[caravans.TripVisitIn(request_id=r, beneficiaries=120) for r in requests],
    )  # fmt: skip
    return str(await caravans.log_trip(ctx, trip, logged_by=None)), requests


async def test_the_association_sets_a_target_and_sees_the_progress(ctx, new_page, sign_in, shot):
    city, county, (caravan, idle) = await county_with_fleet(ctx)
    association = await identity.ensure_user(ctx, "t_targets_association")
    await access.grant_role(ctx, association, "org_admin", city)
    dispatcher = await identity.ensure_user(ctx, "t_targets_dispatcher")
    await access.grant_role(ctx, dispatcher, "dispatcher", county)
    site, admin = await school(ctx, county, "城关小学", "t_targets_school")
    trip, [request] = await logged_visits(ctx, caravan, ctx.clock.local_now().date(), site)
    await caravans.confirm_visit(ctx, trip, request, by=admin)

    page = await new_page()
    await sign_in(page, "t_targets_association")
    await page.goto(f"/console/kpis?org_id={county}")
    row = page.locator(f'#kpis-targets tr[data-caravan="{caravan}"]')
    assert await row.locator(".no-target").inner_text() == "未设目标"
    form = page.locator(f'[data-target-form="{caravan}"]')
    await form.locator("summary").click()
    await form.locator('input[name="field_days"]').fill("10")
    await form.locator('input[name="km"]').fill("400")
    await form.locator("button", has_text="保存目标").click()
    await page.wait_for_url(f"**/console/kpis?org_id={county}&year=*&done=target#targets")
    row = page.locator(f'#kpis-targets tr[data-caravan="{caravan}"]')
    assert await row.locator(".target-days").inner_text() == "10"
    assert await row.locator(".done-days").inner_text() == "1"
    assert await row.locator(".waiting-days").inner_text() == "0"
    assert await row.locator(".days-progress .pct").inner_text() == "10.0%"
    assert await row.locator(".days-progress progress").get_attribute("value") == "10.0"
    assert await row.locator(".target-km").inner_text() == "400"
    assert await row.locator(".done-km").inner_text() == "80"
    assert await row.locator(".km-progress .pct").inner_text() == "20.0%"
    form = page.locator(f'[data-target-form="{caravan}"]')
    assert await form.locator('input[name="field_days"]').input_value() == "10"
    idle_row = page.locator(f'#kpis-targets tr[data-caravan="{idle}"]')
    assert await idle_row.locator(".no-target").count() == 1
    stored = await caravans.get_target(ctx, caravan, ctx.clock.local_now().year)
    assert (stored.field_days_target, stored.km_target) == (10, 400.0)
    await shot(page, "kpis-targets", element=page.locator("#targets"))

    # What the browser's own checks would stop is refused by the server, naming the field.
    await form.locator("summary").click()
    await form.locator("form").evaluate("form => { form.noValidate = true; }")
    await form.locator('input[name="field_days"]').fill("0")
    await form.locator("button", has_text="保存目标").click()
    error = page.locator("#target-error")
    await error.wait_for()
    assert (await error.inner_text()).startswith("字段 field_days")
    assert await page.locator(f'[data-target-form="{caravan}"]').get_attribute("open") == ""
    stored = await caravans.get_target(ctx, caravan, ctx.clock.local_now().year)
    assert stored.field_days_target == 10
    await page.goto(f"/console/kpis?org_id={county}")
    form = page.locator(f'[data-target-form="{caravan}"]')

    # Both fields blank remove the target.
    await form.locator("summary").click()
    await form.locator('input[name="field_days"]').fill("")
    await form.locator('input[name="km"]').fill("")
    await form.locator("button", has_text="保存目标").click()
    await page.wait_for_url("**done=target#targets")
    assert await page.locator(f'tr[data-caravan="{caravan}"] .no-target').count() == 1

    # A dispatcher sees the progress, not the form: the target is the association's.
    await caravans.set_target(
        ctx, caravan, caravans.YearTarget(year=ctx.clock.local_now().year, field_days=5), by=None
    )
    page = await new_page()
    await sign_in(page, "t_targets_dispatcher")
    await page.goto("/console/kpis")
    row = page.locator(f'#kpis-targets tr[data-caravan="{caravan}"]')
    assert await row.locator(".days-progress .pct").inner_text() == "20.0%"
    assert await page.locator(".target-form").count() == 0


async def test_a_site_admin_confirms_the_visits_at_their_site(ctx, new_page, sign_in, shot):
    _, county, (caravan, _) = await county_with_fleet(ctx)
    mine, _ = await school(ctx, county, "城关小学", "t_confirm_school")
    theirs, _ = await school(ctx, county, "北关小学", "t_confirm_other_school")
    _, (request, other) = await logged_visits(
        ctx, caravan, ctx.clock.local_now().date(), mine, theirs
    )

    page = await new_page()
    await sign_in(page, "t_confirm_school")
    await page.locator(".sidebar a", has_text="出车记录").click()  # a site admin's way in
    await page.wait_for_url("**/console/trips")
    rows = page.locator("#waiting-table tbody tr")
    assert await rows.count() == 1
    assert "城关小学" in await rows.first.inner_text()
    assert "辉县1号车" in await rows.first.inner_text()
    assert await page.locator("#new-trip").count() == 0  # logging trips is the crew's
    await shot(page, "trips-waiting")
    await rows.first.locator("button", has_text="确认走访").click()
    await page.wait_for_url("**/console/trips?done=confirmed#waiting")
    assert await page.locator("#waiting-table").count() == 0
    assert "没有等待确认的走访" in await page.locator("#waiting").inner_text()
    visits = {str(v["request_id"]): v for v in (await ctx.db.trips.find_one())["visits"]}
    assert visits[request]["confirmed"] is True
    assert visits[other]["confirmed"] is False


async def test_a_school_cancels_a_scheduled_visit(ctx, http, login, new_page, sign_in, shot):
    world = await World(ctx, http).build(login)
    await world.caravan(1, crew_size=3)
    site = await world.site("城关小学", offset(5, 3))
    request = await world.request(site, 0, 4, 90)
    plan = await world.until_done(await world.plan(time_limit_s=1))
    [visit] = (await world.post(f"/api/v1/plans/{plan['id']}/publish"))["published"]

    page = await new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    await sign_in(page, "o_site_admin")
    await page.goto("/console/visit-requests")
    row = page.locator(f"#request-{request}")
    assert await row.locator(".status").inner_text() == "已排期"
    await row.locator("button", has_text="取消走访").click()
    await page.wait_for_url("**/console/visit-requests?done=cancelled")
    row = page.locator(f"#request-{request}")
    assert await row.locator(".status").inner_text() == "已取消"
    assert await row.locator(".request-withdrawn").inner_text() == "已撤回排期的走访"
    assert "随车志愿者会收到通知" in await page.locator("#requests-notice").inner_text()
    await shot(page, "request-withdrawn", element=row)
    assert (await activities.get_doc(ctx, visit["activity_id"]))["status"] == "cancelled"

    # The dispatcher's plan shows the visit withdrawn, not short of crew.
    dispatcher = await new_page()
    await sign_in(dispatcher, "o_dispatcher")
    await dispatcher.goto(f"/console/plans/{plan['id']}")
    crew = dispatcher.locator(f'[data-crew="{request}"]')
    assert await crew.locator('[data-withdrawn="cancelled"]').inner_text() == "学校已取消（已撤回）"
    assert await crew.locator(".badge").count() == 0
    await ctx.solves.drain(cancel=True)
