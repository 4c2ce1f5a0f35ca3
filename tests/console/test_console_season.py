"""A season of 科普大篷车 in four mountain counties, in a real browser, as a city's dispatcher
works it: 106 schools' requests imported from the console's own xlsx template, a month planned
for 8 caravans while the progress bar runs to 100 %, a route line per caravan-day on the map, a
visit pinned to another day and the month re-planned, the plan published; a volunteer joins a
crew from the mini-program, the caravan's day is logged, the school confirms it from its phone,
and the KPIs page counts the trip's km and people as confirmed. A workbook with two bad rows
names both and imports nothing."""

from __future__ import annotations

import asyncio
import io
import random
from datetime import date, datetime, timedelta

import pytest
from bson import ObjectId
from openpyxl import load_workbook
from playwright.async_api import Error as PlaywrightError

from server.clock import SHANGHAI
from server.domain import access, caravans, identity, orgs, planning, sites
from server.domain.caravans.imports import SHEET
from server.web import XLSX

DISPATCHER = "t_season_dispatcher"
COUNTIES = {
    "新县": (114.88, 31.64),
    "商城县": (115.41, 31.80),
    "光山县": (114.92, 32.01),
    "罗山县": (114.51, 32.20),
}
SCHOOLS = 106
CARAVANS_PER_COUNTY = 2
CREW = 2
ROUTE_SERIES = """el => echarts.getInstanceByDom(el).getOption().series
  .filter(s => s && s.id.startsWith("route:")).length"""
PROGRESS = """() => {
  const bar = document.querySelector("#plan-progress");
  const value = bar && bar.querySelector("[data-progress]");
  return bar && [bar.dataset.status, value ? Number(value.dataset.progress) : null];
}"""


class Season:
    """信阳市: four county associations, each with a depot at its seat and two caravans, 106
    schools (open on school days), the city's dispatcher, and a request per school for a window
    of one to two weeks inside a four-week month."""

    async def build(self, ctx) -> Season:
        root = await orgs.create_org(ctx, "河南省科学技术协会", "province", None)
        self.city = await orgs.create_org(ctx, "信阳市科协", "city", root)
        await access.grant_role(
            ctx, await identity.ensure_user(ctx, DISPATCHER), "dispatcher", self.city
        )
        rng = random.Random(106)
        hours = [sites.OpenHours(weekday=d, start="08:00", end="17:00") for d in range(1, 6)]
        self.caravans: list[str] = []
        self.schools: dict[str, str] = {}  # name → site id
        for n, (name, (lng, lat)) in enumerate(COUNTIES.items()):
            county = await orgs.create_org(ctx, f"{name}科协", "county", self.city)
            depot = await caravans.create_depot(
                ctx,
                caravans.NewDepot(name=f"{name}科技馆车场", org_id=str(county),
                                  location=sites.LocationIn(lng=lng, lat=lat)),
            )  # fmt: skip
            for k in range(CARAVANS_PER_COUNTY):
                new = caravans.NewCaravan(
                    name=f"{name}{k + 1}号大篷车", plate=f"豫S{n}{k}001", vehicle_type="Ⅱ",
                    depot_id=str(depot), org_id=str(county), crew_size=CREW,
                )  # fmt: skip
                self.caravans.append(str(await caravans.create_caravan(ctx, new)))
            for k in range(SCHOOLS // 4 + (n < SCHOOLS % 4)):
                school = f"{name}第{k + 1}小学"
                place = sites.LocationIn(
                    lng=round(lng + rng.uniform(-0.2, 0.2), 5),
                    lat=round(lat + rng.uniform(-0.15, 0.15), 5),
                )
                self.schools[school] = await _site(ctx, school, county, place, hours)
        today = ctx.clock.local_now().date()
        self.start = today + timedelta(days=7 - today.weekday())  # next Monday
        self.end = self.start + timedelta(days=25)  # the fourth week's Friday
        self.rows = []
        for school in self.schools:
            earliest = self.start + timedelta(days=rng.randrange(0, 12))
            latest = min(earliest + timedelta(days=rng.randrange(7, 15)), self.end)
            self.rows.append([school, earliest, latest, 90, "三至六年级", rng.randint(3, 8)])
        return self


async def _site(ctx, name, county, place, hours) -> str:
    new = sites.NewSite(name=name, kind="school", org_id=str(county), location=place,
                        open_hours=hours)  # fmt: skip
    return str(await sites.create_site(ctx, new))


async def filled_template(page, rows: list[list]) -> bytes:
    """The console's template, downloaded as the dispatcher would, with the rows typed in."""
    href = await page.locator("#template-link").get_attribute("href")
    answer = await page.request.get(href)
    assert answer.ok, await answer.text()
    book = load_workbook(io.BytesIO(await answer.body()))
    assert book["站点"].max_row == 1 + SCHOOLS  # every school of the city, by name and id
    for row in rows:
        book[SHEET].append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def upload(page, body: bytes) -> None:
    await page.locator('#import-form input[name="file"]').set_input_files(
        {"name": "信阳市走访申请.xlsx", "mimeType": XLSX, "buffer": body}
    )
    await page.locator("#import-form button", has_text="导入").click()


async def watch_progress(page) -> list[float]:
    """The progress bar's readings while the plan solves, until the solved page shows."""
    readings: list[float] = []
    for _ in range(600):
        try:
            status, value = await page.evaluate(PROGRESS) or (None, None)
        except PlaywrightError:  # the page reloading once the plan is solved
            status, value = None, None
        if status in ("queued", "running") and value is not None:
            readings.append(value)
        if status == "done" and await page.locator("#plan-map[data-routes] canvas").count():
            return readings
        await asyncio.sleep(0.2)
    raise AssertionError(f"the plan did not finish; progress seen: {readings}")


def _day_end(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), SHANGHAI).replace(hour=18)


async def test_a_bad_workbook_names_both_bad_rows_and_imports_nothing(ctx, new_page, sign_in):
    season = await Season().build(ctx)
    rows = [list(r) for r in season.rows]
    rows[35][1], rows[35][2] = rows[35][2] + timedelta(days=3), rows[35][1]  # Excel row 37
    rows[50][0] = "信阳市不存在的小学"  # Excel row 52
    page = await new_page()
    await sign_in(page, DISPATCHER)
    await page.goto("/console/visit-requests")
    await upload(page, await filled_template(page, rows))
    error = page.locator("#requests-error")
    await error.wait_for()
    text = await error.inner_text()
    assert "未导入任何申请（2 处错误）" in text
    assert "第37行「最晚日期」早于最早日期" in text
    assert "第52行「学校/站点名称或编号」找不到站点「信阳市不存在的小学」" in text
    assert await ctx.db.visit_requests.count_documents({}) == 0


async def test_a_month_for_eight_caravans_from_import_to_confirmed_kpis(
    ctx, http, login, new_page, sign_in, shot
):
    season = await Season().build(ctx)
    page = await new_page()
    await sign_in(page, DISPATCHER)

    # The season's requests, from the console's template.
    await page.goto("/console/visit-requests")
    await upload(page, await filled_template(page, season.rows))
    await page.wait_for_url(f"**/console/visit-requests?imported={SCHOOLS}")
    assert await ctx.db.visit_requests.count_documents({"status": "open"}) == SCHOOLS

    # A month with every caravan and open request of the city, watched to 100 %.
    await page.goto("/console/plans/new")
    await page.locator("#org_id").select_option(str(season.city))
    await page.locator("#start_date").fill(season.start.isoformat())
    await page.locator("#end_date").fill(season.end.isoformat())
    await page.locator("#time_limit_s").fill("8")
    await page.locator("button", has_text="开始排程").click()
    await page.wait_for_url("**/console/plans/*")
    plan_id = page.url.rsplit("/", 1)[1]
    readings = await watch_progress(page)
    assert readings and readings == sorted(readings) and 0 < max(readings) < 1, readings
    assert await page.locator("#plan-progress [data-progress]").inner_text() == "100%"

    plan = await planning.get_plan(ctx, plan_id)
    assert plan.status == "done" and sorted(plan.caravan_ids) == sorted(season.caravans)
    assert len(plan.request_ids) == SCHOOLS and not plan.unassigned
    assert sum(len(r.stops) for r in plan.routes) == SCHOOLS
    chart = page.locator("#plan-map")
    assert await chart.evaluate(ROUTE_SERIES) == len(plan.routes)
    assert await page.locator("#plan-days tbody").count() == len(plan.routes)
    assert await page.locator('[data-total="visits"]').inner_text() == str(SCHOOLS)
    timeline = page.locator("#plan-timeline")
    assert await timeline.locator("[data-caravan]").count() == len(season.caravans)
    assert await timeline.locator(".timeline-visit").count() == SCHOOLS
    await shot(page, "season-plan-map", element=page.locator("#plan-map"))
    await shot(page, "season-plan-timeline", element=timeline)

    first_km = plan.total_distance_km
    assert await page.locator("[data-change]").count() == 0  # nothing to compare with yet

    # Pin one visit to another school day in its window, and plan the month again.
    placed = {s.request_id: (r.caravan_id, r.date) for r in plan.routes for s in r.stops}
    requests = await caravans.requests_by_id(ctx, [ObjectId(r) for r in placed])
    moved, (caravan, was) = next(
        (rid, where) for rid, where in placed.items()
        if _other_day(requests[ObjectId(rid)], where[1]) is not None
    )  # fmt: skip
    day = _other_day(requests[ObjectId(moved)], was)
    await page.locator("#pin-request").select_option(moved)
    await page.locator("#pin-caravan").select_option(caravan)
    await page.locator("#pin-date").select_option(day)
    await page.locator("#pin-form button").click()
    await page.locator(".alert-ok", has_text="已指定").wait_for()
    await page.locator("button", has_text="重新规划").click()
    await page.wait_for_url(f"**/console/plans/{plan_id}?done=replanned")
    await watch_progress(page)
    plan = await planning.get_plan(ctx, plan_id)
    assert plan.runs == 2 and not plan.unassigned
    placed = {s.request_id: (r.caravan_id, r.date) for r in plan.routes for s in r.stops}
    assert placed[moved] == (caravan, day)
    assert await chart.evaluate(ROUTE_SERIES) == len(plan.routes)
    # The totals beside the first run's: the same visits, the km the pin cost or saved.
    assert plan.previous.run == 1 and plan.previous.visits == SCHOOLS
    assert plan.previous.distance_km == pytest.approx(first_km, abs=0.05)
    assert await page.locator('[data-change="visits"]').inner_text() == "较上次 +0"
    km_change = await page.locator('[data-change="km"]').inner_text()
    assert km_change == f"较上次 {plan.total_distance_km - plan.previous.distance_km:+.1f}"

    # Publish: every visit recruits its crew; a volunteer joins one from the mini-program.
    await page.locator("button", has_text="发布").click()
    await page.locator(".alert-ok", has_text="计划已发布").wait_for()
    assert await page.locator(".crew").count() == SCHOOLS
    activity = next(p.activity_id for p in plan_published(await planning.get_plan(ctx, plan_id))
                    if p.request_id == moved)  # fmt: skip
    volunteer = await login("o_season_crew")
    joined = await http.post(f"/mp/v1/activities/{activity}/signup", headers=volunteer.headers)
    assert joined.status_code == 201, joined.text
    assert joined.json()["status"] == "confirmed"
    await page.reload()
    crew = page.locator(f'[data-crew="{moved}"]')
    assert await crew.locator(".tag").count() == 1
    assert await crew.locator(".badge", has_text=f"缺 {CREW - 1} 人").count() == 1
    assert await page.locator(".crew .badge", has_text=f"缺 {CREW} 人").count() == SCHOOLS - 1

    # The evening of the visit: the caravan's day is logged; the school confirms from its phone.
    ctx.clock.advance((_day_end(day) - ctx.clock.now()).total_seconds())
    await sign_in(page, DISPATCHER)  # weeks later: the console session has long expired
    await page.goto("/console/trips")
    await page.locator("#t-caravan").select_option(caravan)
    await page.locator("#t-date").fill(day)
    await page.locator("#t-start").fill("20310")
    await page.locator("#t-end").fill("20373")
    await page.locator("#t-request-0").select_option(moved)
    await page.locator("#t-people-0").fill("150")
    await page.locator("#new-trip button").click()
    await page.wait_for_url("**/console/trips?done=logged")
    trip = await page.locator("#trips-table tbody tr").first.get_attribute("data-trip")
    school = await login("o_season_school")
    site_id = requests[ObjectId(moved)]["site_id"]
    await sites.add_admin(ctx, site_id, ObjectId(school.user_id))
    confirmed = await http.post(
        f"/mp/v1/trips/{trip}/visits/{moved}/confirm", headers=school.headers
    )
    assert confirmed.status_code == 200, confirmed.text

    # The KPIs count the trip as confirmed: 63 km, one activity, 150 people.
    year = date.fromisoformat(day).year
    await page.goto(f"/console/kpis?org_id={season.city}&year={year}")
    name = (await caravans.caravans_by_id(ctx, [ObjectId(caravan)]))[ObjectId(caravan)]["name"]
    row = page.locator("#kpis-caravans tr", has_text=name)
    assert await row.locator(".km").inner_text() in ("63", "63.0")
    assert await row.locator(".confirmed-activities").inner_text() == "1"
    assert await row.locator(".confirmed-beneficiaries").inner_text() == "150"
    assert await row.locator(".pending-activities").inner_text() == "0"
    total = page.locator("#kpis-total tbody tr")
    assert await total.locator(".confirmed-beneficiaries").inner_text() == "150"
    await shot(page, "season-kpis")


def plan_published(plan: planning.PlanOut) -> list[planning.PublishedVisit]:
    assert plan.published_at is not None
    return plan.published


def _other_day(request: dict, current: str) -> str | None:
    """A school day in the request's window other than the one it is planned on."""
    day, latest = (date.fromisoformat(request[k]) for k in ("earliest_date", "latest_date"))
    while day <= latest:
        if day.weekday() < 5 and day.isoformat() != current:
            return day.isoformat()
        day += timedelta(days=1)
    return None
