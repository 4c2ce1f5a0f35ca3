"""车队 in a real browser: a dispatcher edits a caravan, gives another a maintenance day and
retires a third (after confirming); the week's plan then leaves the retired one out, gives the
one in maintenance no visit that day, and the plan page's timeline shows it all."""

from __future__ import annotations

from datetime import timedelta

from bson import ObjectId

from server.domain import access, caravans, identity, orgs, planning, sites

DISPATCHER = "t_fleet_dispatcher"
DEPOT = (113.80, 35.46)


async def build(ctx) -> dict:
    root = await orgs.create_org(ctx, "河南省科学技术协会", "province", None)
    city = await orgs.create_org(ctx, "新乡市科协", "city", root)
    county = await orgs.create_org(ctx, "辉县市科协", "county", city)
    user = await identity.ensure_user(ctx, DISPATCHER)
    await access.grant_role(ctx, user, "dispatcher", county)
    depot = await caravans.create_depot(
        ctx,
        caravans.NewDepot(
            name="辉县市科技馆车场",
            org_id=str(county),
            location=sites.LocationIn(lng=DEPOT[0], lat=DEPOT[1]),
        ),
    )
    fleet = [
        str(
            await caravans.create_caravan(
                ctx,
                caravans.NewCaravan(
                    name=f"辉县{n}号大篷车", plate=f"豫G0000{n}", vehicle_type="Ⅱ",
                    depot_id=str(depot), org_id=str(county),
                ),
            )
        )
        for n in (1, 2, 3)
    ]  # fmt: skip
    today = ctx.clock.local_now().date()
    monday = today + timedelta(days=7 - today.weekday() + 7)
    hours = [sites.OpenHours(weekday=d, start="08:00", end="17:00") for d in range(1, 6)]
    for n in range(6):
        site_id = await sites.create_site(
            ctx,
            sites.NewSite(
                name=f"辉县市第{n + 1}小学",
                kind="school",
                org_id=str(county),
                location=sites.LocationIn(lng=DEPOT[0] + 0.03 * (n - 3), lat=DEPOT[1] + 0.02),
                open_hours=hours,
            ),
        )
        await caravans.create_request(
            ctx,
            caravans.NewVisitRequest(
                site_id=str(site_id),
                earliest_date=monday,
                latest_date=monday + timedelta(days=1),
                duration_min=120,
            ),
        )
    return {"county": county, "user": user, "fleet": fleet, "monday": monday}


async def test_a_dispatcher_edits_maintains_and_retires_caravans_and_sees_the_timeline(
    ctx, new_page, sign_in, shot
):
    world = await build(ctx)
    edited, resting, retired = world["fleet"]
    monday = world["monday"].isoformat()
    page = await new_page()
    await sign_in(page, DISPATCHER)
    await page.locator(".sidebar a", has_text="车队").click()
    await page.wait_for_url("**/console/fleet")

    # Edit the first caravan: a new name, Ⅳ type and a bigger crew.
    await page.locator(f"#caravan-{edited} summary").click()
    await page.locator(f"#e-name-{edited}").fill("辉县科普旗舰车")
    await page.locator(f"#e-type-{edited}").select_option("IV")
    await page.locator(f"#e-crew-{edited}").fill("6")
    await page.locator(f'#caravan-{edited} [data-form="edit"] button').click()
    await page.wait_for_url("**/console/fleet?done=edit")
    row = page.locator(f'#caravans-table tr[data-caravan="{edited}"]')
    assert "辉县科普旗舰车" in await row.inner_text() and "Ⅳ 型" in await row.inner_text()

    # A plate already taken is refused next to the caravan, with what was typed.
    await page.locator(f"#caravan-{edited} summary").click()
    await page.locator(f"#e-plate-{edited}").fill("豫G00002")
    await page.locator(f'#caravan-{edited} [data-form="edit"] button').click()
    await page.locator(f"#caravan-{edited}[open] .alert-error", has_text="已登记").wait_for()
    assert await page.locator(f"#e-plate-{edited}").input_value() == "豫G00002"

    # The second caravan is in maintenance on Monday.
    await page.goto("/console/fleet")
    await page.locator(f"#caravan-{resting} summary").click()
    await page.locator(f"#u-dates-{resting}").fill(monday)
    await page.locator(f'#caravan-{resting} [data-form="unavailable"] button').click()
    await page.wait_for_url("**/console/fleet?done=unavailable")
    row = page.locator(f'#caravans-table tr[data-caravan="{resting}"]')
    assert await row.locator("[data-unavailable] .tag").all_inner_texts() == [monday]

    # Retiring asks first: dismissed, nothing happens; accepted, the third is retired.
    await page.locator(f"#caravan-{retired} summary").click()
    retire = page.locator(f'#caravan-{retired} [data-form="retire"] button')
    page.once("dialog", lambda dialog: dialog.dismiss())
    await retire.click()
    assert (await caravans.get_caravan_doc(ctx, retired))["active"] is True
    page.once("dialog", lambda dialog: dialog.accept())
    await retire.click()
    await page.wait_for_url("**/console/fleet?done=retire")
    row = page.locator(f'#caravans-table tr[data-caravan="{retired}"]')
    await row.locator("[data-retired]").wait_for()
    assert await page.locator(f"#caravan-{retired}").count() == 0
    await shot(page, "fleet")

    # Plan Monday and Tuesday: the retired caravan is left out, the resting one is off Monday.
    plan_id = await planning.create_plan(
        ctx,
        planning.NewPlan(
            org_id=str(world["county"]),
            start_date=world["monday"],
            end_date=world["monday"] + timedelta(days=1),
            time_limit_s=1,
        ),
        created_by=ObjectId(world["user"]),
    )
    await ctx.solves.wait(plan_id, 30)
    plan = await planning.get_plan(ctx, plan_id)
    assert plan.status == "done" and plan.caravan_ids == [edited, resting]
    assert (resting, monday) not in {(r.caravan_id, r.date) for r in plan.routes}
    await page.goto(f"/console/plans/{plan_id}")
    timeline = page.locator('#plan-timeline[data-placed="true"]')
    await timeline.wait_for()
    assert await timeline.locator(".timeline-caravan").count() == 2
    off = timeline.locator(f'[data-caravan="{resting}"] .timeline-day.timeline-off')
    assert await off.get_attribute("data-date") == monday
    assert await off.locator(".timeline-visit").count() == 0
    visits = timeline.locator(".timeline-visit")
    assert await visits.count() == sum(len(r.stops) for r in plan.routes) > 0
    first = plan.routes[0]
    day = timeline.locator(f'[data-caravan="{first.caravan_id}"] [data-date="{first.date}"]')
    assert await day.locator(".timeline-visit").count() == len(first.stops)
    assert (await visits.first.evaluate("el => el.style.left")).endswith("%")
    await shot(page, "fleet-plan-timeline")
