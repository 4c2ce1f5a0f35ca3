"""走访申请 and 指标 in a real browser: a dispatcher imports a season's requests through the
console's form and sees them listed, declines one with a reason and sees its state; the KPIs page
shows a logged, confirmed trip's km and people as confirmed, and an unconfirmed visit as pending."""

from __future__ import annotations

import io
from datetime import timedelta

from openpyxl import Workbook

from server.domain import access, caravans, identity, orgs, sites
from server.domain.caravans.imports import HEADERS
from server.web import XLSX

DISPATCHER = "t_kpis_dispatcher"


def workbook(rows: list[list]) -> bytes:
    book = Workbook()
    book.active.title = "走访申请"
    book.active.append(list(HEADERS))
    for row in rows:
        book.active.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def test_import_decline_and_kpis(ctx, new_page, sign_in, shot):
    root = await orgs.create_org(ctx, "河南省科学技术协会", "province", None)
    city = await orgs.create_org(ctx, "新乡市科协", "city", root)
    county = await orgs.create_org(ctx, "辉县市科协", "county", city)
    dispatcher = await identity.ensure_user(ctx, DISPATCHER)
    await access.grant_role(ctx, dispatcher, "dispatcher", county)
    school = await identity.ensure_user(ctx, "t_kpis_school")
    names = [f"辉县市第{n}小学" for n in (1, 2, 3)]
    for name in names:
        site_id = await sites.create_site(
            ctx,
            sites.NewSite(name=name, kind="school", org_id=str(county),
                          location=sites.LocationIn(lng=113.8, lat=35.46)),
        )  # fmt: skip
        await sites.add_admin(ctx, site_id, school)
    today = ctx.clock.local_now().date()
    page = await new_page()
    await sign_in(page, DISPATCHER)

    await page.goto("/console/visit-requests")
    rows = [[name, today, today + timedelta(days=20), 90, "四年级", 5] for name in names]
    await page.locator('#import-form input[name="file"]').set_input_files(
        {"name": "season.xlsx", "mimeType": XLSX, "buffer": workbook(rows)}
    )
    await page.locator("#import-form button", has_text="导入").click()
    await page.wait_for_url("**/console/visit-requests?imported=3")
    assert await page.locator("#requests-table tbody tr").count() == 3

    bad = [*rows, ["不存在的小学", today, today + timedelta(days=3), 90, None, 5]]
    await page.locator('#import-form input[name="file"]').set_input_files(
        {"name": "bad.xlsx", "mimeType": XLSX, "buffer": workbook(bad)}
    )
    await page.locator("#import-form button", has_text="导入").click()
    error = page.locator("#requests-error")
    await error.wait_for()
    assert "第5行「学校/站点名称或编号」找不到站点「不存在的小学」" in await error.inner_text()
    assert await ctx.db.visit_requests.count_documents({}) == 3

    await page.goto("/console/visit-requests")
    first = page.locator("#requests-table tbody tr").first
    await first.locator("summary", has_text="拒绝").click()
    await first.locator('input[name="reason"]').fill("本学期车辆已排满")
    await first.locator("button", has_text="确认拒绝").click()
    await page.wait_for_url("**/console/visit-requests?done=declined")
    declined = page.locator("#requests-table tbody tr").first
    assert await declined.locator(".status").inner_text() == "已拒绝"
    assert await declined.locator(".request-reason").inner_text() == "本学期车辆已排满"
    await shot(page, "requests-declined")

    open_ids = [
        d["_id"] async for d in ctx.db.visit_requests.find({"status": "open"}).sort("_id", 1)
    ]
    depot = await caravans.create_depot(
        ctx,
        caravans.NewDepot(name="辉县市车场", org_id=str(county),
                          location=sites.LocationIn(lng=113.8, lat=35.46)),
    )  # fmt: skip
    trips = []
    for n, (request_id, km, people) in enumerate(zip(open_ids, (80, 50), (120, 45), strict=True)):
        caravan = await caravans.create_caravan(
            ctx,
            caravans.NewCaravan(name=f"辉县{n + 1}号车", plate=f"豫G1000{n}", vehicle_type="Ⅱ",
                                depot_id=str(depot), org_id=str(county)),
        )  # fmt: skip
        new = caravans.NewTrip(
            caravan_id=str(caravan), date=today, odometer_start_km=1000,
            odometer_end_km=1000 + km,
            visits=[caravans.TripVisitIn(request_id=str(request_id), beneficiaries=people)],
        )  # fmt: skip
        trips.append(await caravans.log_trip(ctx, new, logged_by=dispatcher))
    await caravans.confirm_visit(ctx, str(trips[0]), str(open_ids[0]), by=school)

    await page.goto("/console/kpis")
    table = page.locator("#kpis-caravans")
    one = table.locator("tr", has_text="辉县1号车")
    two = table.locator("tr", has_text="辉县2号车")
    assert await one.locator(".km").inner_text() == "80"
    assert await one.locator(".confirmed-activities").inner_text() == "1"
    assert await one.locator(".confirmed-beneficiaries").inner_text() == "120"
    assert await one.locator(".pending-activities").inner_text() == "0"
    assert await two.locator(".confirmed-beneficiaries").inner_text() == "0"
    assert await two.locator(".pending-activities").inner_text() == "1"
    assert (await two.locator(".pending-beneficiaries").inner_text()).startswith("45")
    total = page.locator("#kpis-total tbody tr")
    assert await total.locator(".confirmed-beneficiaries").inner_text() == "120"
    assert await page.locator("[data-kpi-chart] canvas").count() == 1
    await shot(page, "kpis")
