"""Visit requests beyond planning: a dispatcher declines one with a reason (the site's admins are
sent it), a site's admin cancels their own, neither is planned; a season's requests imported
from a county's workbook, all rows or none, with every bad row and column named."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from bson import ObjectId
from openpyxl import Workbook, load_workbook

from server.domain import access, caravans, orgs, sites
from server.web import XLSX

HEADERS = ["学校/站点名称或编号", "最早日期", "最晚日期", "时长（分钟）", "受众", "优先级"]


async def _county(ctx, name: str, city, schools: int) -> tuple[ObjectId, list[ObjectId]]:
    county = await orgs.create_org(ctx, name, "county", city)
    made = []
    for n in range(schools):
        new = sites.NewSite(
            name=f"{name[:3]}第{n + 1}小学",
            kind="school",
            org_id=str(county),
            location=sites.LocationIn(lng=113.8 + n / 1000, lat=35.4),
        )
        made.append(await sites.create_site(ctx, new))
    return county, made


@pytest.fixture
async def world(ctx):
    root = await orgs.create_org(ctx, "省科协", "province", None)
    city = await orgs.create_org(ctx, "新乡市科协", "city", root)
    counties = [
        await _county(ctx, name, city, 27)
        for name in ("辉县市科协", "卫辉市科协", "获嘉县科协", "原阳县科协")
    ]
    return city, counties


def book(rows: list[list]) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "走访申请"
    sheet.append(HEADERS)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def season(ctx, counties, count: int) -> list[list]:
    """`count` rows over the counties' schools: by name, and every fifth by id."""
    start = ctx.clock.local_now().date() + timedelta(days=10)
    schools = [
        (f"{name[:3]}第{n + 1}小学", site_id)
        for name, (_, made) in zip(("辉县市", "卫辉市", "获嘉县", "原阳县"), counties, strict=True)
        for n, site_id in enumerate(made)
    ]
    rows = []
    for i in range(count):
        name, site_id = schools[i % len(schools)]
        first = start + timedelta(days=i % 20)
        rows.append(
            [str(site_id) if i % 5 == 0 else name, first, first + timedelta(days=7), 90,
             "四至六年级" if i % 2 else None, 1 + i % 10]
        )  # fmt: skip
    return rows


async def dispatcher(ctx, login, org):
    session = await login()
    await access.grant_role(ctx, ObjectId(session.user_id), "dispatcher", org)
    return session


async def test_a_season_imports_whole_and_once(ctx, http, login, world):
    city, counties = world
    staff = await dispatcher(ctx, login, city)
    template = await http.get(
        f"/api/v1/visit-requests/template.xlsx?org_id={city}", headers=staff.headers
    )
    assert template.status_code == 200, template.text
    sheets = load_workbook(io.BytesIO(template.content))
    assert [c.value for c in sheets["走访申请"][1]] == HEADERS
    assert sheets["站点"].max_row == 1 + 4 * 27

    headers = {**staff.headers, "Content-Type": XLSX, "Idempotency-Key": "season-2025"}
    body = book(season(ctx, counties, 106))
    url = f"/api/v1/visit-requests/import?org_id={city}"
    first = await http.post(url, content=body, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["imported"] == 106
    again = await http.post(url, content=body, headers=headers)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert await ctx.db.visit_requests.count_documents({"status": "open"}) == 106
    per_county = {
        county: await ctx.db.visit_requests.count_documents({"org_id": county})
        for county, _ in counties
    }
    assert sorted(per_county.values()) == [25, 27, 27, 27]


async def test_a_bad_row_names_itself_and_imports_nothing(ctx, http, login, world):
    city, counties = world
    staff = await dispatcher(ctx, login, city)
    rows = season(ctx, counties, 106)
    rows[35][1], rows[35][2] = rows[35][2], rows[35][1]  # row 37 in Excel: dates swapped
    rows[50][0] = "不存在的小学"  # row 52
    answer = await http.post(
        f"/api/v1/visit-requests/import?org_id={city}",
        content=book(rows),
        headers={**staff.headers, "Content-Type": XLSX},
    )
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert "第37行「最晚日期」早于最早日期" in message
    assert "第52行「学校/站点名称或编号」找不到站点「不存在的小学」" in message
    assert "2 处错误" in message
    assert await ctx.db.visit_requests.count_documents({}) == 0

    other_county, _ = counties[1]
    narrow = await dispatcher(ctx, login, other_county)
    outside = await http.post(
        f"/api/v1/visit-requests/import?org_id={counties[0][0]}",
        content=book(rows[:1]),
        headers={**narrow.headers, "Content-Type": XLSX},
    )
    assert outside.status_code == 403
    junk = await http.post(
        f"/api/v1/visit-requests/import?org_id={city}", content=b"not a workbook",
        headers={**staff.headers, "Content-Type": XLSX},
    )  # fmt: skip
    assert junk.status_code == 400 and "xlsx" in junk.json()["error"]["message"]


async def _request(ctx, site_id) -> str:
    today = ctx.clock.local_now().date()
    new = caravans.NewVisitRequest(
        site_id=str(site_id),
        earliest_date=today + timedelta(days=2),
        latest_date=today + timedelta(days=9),
        duration_min=90,
    )
    return str(await caravans.create_request(ctx, new))


async def test_declined_and_cancelled_requests_are_never_planned(ctx, http, login, world):
    city, counties = world
    county, made = counties[0]
    staff = await dispatcher(ctx, login, city)
    admin = await login()
    await sites.add_admin(ctx, made[0], ObjectId(admin.user_id))
    stranger = await login()
    await sites.add_admin(ctx, made[1], ObjectId(stranger.user_id))
    declined, cancelled, kept = [await _request(ctx, made[0]) for _ in range(3)]

    empty = await http.post(
        f"/api/v1/visit-requests/{declined}/decline", json={"reason": " "}, headers=staff.headers
    )
    assert empty.status_code == 400
    by_admin = await http.post(
        f"/api/v1/visit-requests/{declined}/decline", json={"reason": "x"}, headers=admin.headers
    )
    assert by_admin.status_code == 403
    answer = await http.post(
        f"/api/v1/visit-requests/{declined}/decline",
        json={"reason": "本学期车辆已排满"},
        headers=staff.headers,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "declined"
    assert answer.json()["reason"] == "本学期车辆已排满"
    [told] = await ctx.db.reminders.find({"template_key": "visit_declined"}).to_list(None)
    assert told["user_id"] == ObjectId(admin.user_id)
    assert told["data"]["thing3"]["value"] == "本学期车辆已排满"

    theirs = await http.post(f"/api/v1/visit-requests/{cancelled}/cancel", headers=stranger.headers)
    assert theirs.status_code == 403
    mine = await http.post(f"/api/v1/visit-requests/{cancelled}/cancel", headers=admin.headers)
    assert mine.status_code == 200 and mine.json()["status"] == "cancelled"
    for closed, verb in ((declined, "cancel"), (cancelled, "decline")):
        late = await http.post(
            f"/api/v1/visit-requests/{closed}/{verb}", json={"reason": "再试"},
            headers=staff.headers,
        )  # fmt: skip
        assert late.status_code == 409 and late.json()["error"]["code"] == "request_closed"

    today = ctx.clock.local_now().date()
    planned = await caravans.open_requests(ctx, county, today, today + timedelta(days=30), None)
    assert [str(r["_id"]) for r in planned] == [kept]
    listed = await http.get(
        f"/api/v1/visit-requests?org_id={county}&status=declined", headers=staff.headers
    )
    assert [r["id"] for r in listed.json()["items"]] == [declined]
