"""Campaigns pooling the caravans of two counties (沿黄科普行), a plan of a campaign visiting the
sites of both counties, and the cursor-paged lists of depots, caravans, visit requests, trips,
plans and campaigns, each limited to the organisations the caller may see."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import pytest
from bson import ObjectId

from server.domain import access, caravans, orgs, planning, sites
from tests.test_caravans import next_monday, offset

HUIXIAN = (113.805468, 35.462312)  # 辉县市
WEIHUI = (114.064907, 35.398494)  # 卫辉市
LINZHOU = (113.820129, 36.083072)  # 林州市, in another city


class Tour:
    """新乡市 with two counties (辉县市, 卫辉市), each with a depot and a caravan, and 安阳市's
    林州市 beside it; a dispatcher of the city, one of 辉县市, and a volunteer."""

    def __init__(self, ctx, http):
        self.ctx, self.http = ctx, http
        self.plates = 0

    async def build(self, login):
        ctx = self.ctx
        root = await orgs.create_org(ctx, "省科协", "province", None)
        self.city = await orgs.create_org(ctx, "新乡市科协", "city", root)
        self.huixian = await orgs.create_org(ctx, "辉县市科协", "county", self.city)
        self.weihui = await orgs.create_org(ctx, "卫辉市科协", "county", self.city)
        anyang = await orgs.create_org(ctx, "安阳市科协", "city", root)
        self.linzhou = await orgs.create_org(ctx, "林州市科协", "county", anyang)
        self.city_dispatcher = await login()
        await access.grant_role(
            ctx, ObjectId(self.city_dispatcher.user_id), "dispatcher", self.city
        )
        self.county_dispatcher = await login()
        await access.grant_role(
            ctx, ObjectId(self.county_dispatcher.user_id), "dispatcher", self.huixian
        )
        self.volunteer = await login()
        # 林州市's caravans use 安阳市's depot, a shared centre of the city above.
        self.depot_at = {
            county: await self.depot(org, at)
            for county, org, at in [
                (self.huixian, self.huixian, HUIXIAN),
                (self.weihui, self.weihui, WEIHUI),
                (self.linzhou, anyang, LINZHOU),
            ]
        }
        self.monday = next_monday(ctx.clock.local_now().date() + timedelta(days=7))
        return self

    async def depot(self, org: ObjectId, at: tuple[float, float]) -> str:
        depot_id = await caravans.create_depot(
            self.ctx,
            caravans.NewDepot(
                name=f"车场{org}", org_id=str(org), location=sites.LocationIn(lng=at[0], lat=at[1])
            ),
        )
        return str(depot_id)

    async def caravan(self, org: ObjectId) -> str:
        self.plates += 1
        caravan_id = await caravans.create_caravan(
            self.ctx,
            caravans.NewCaravan(
                name=f"{self.plates}号大篷车",
                plate=f"豫G{self.plates:05d}",
                vehicle_type="II",
                depot_id=self.depot_at[org],
                org_id=str(org),
            ),
        )
        return str(caravan_id)

    async def site(self, org: ObjectId, at: tuple[float, float], name: str) -> str:
        site_id = await sites.create_site(
            self.ctx,
            sites.NewSite(
                name=name,
                kind="school",
                org_id=str(org),
                location=sites.LocationIn(lng=at[0], lat=at[1]),
            ),
        )
        return str(site_id)

    async def request(self, site: str, first: date, last: date, minutes: int = 90) -> str:
        request_id = await caravans.create_request(
            self.ctx,
            caravans.NewVisitRequest(
                site_id=site, earliest_date=first, latest_date=last, duration_min=minutes
            ),
        )
        return str(request_id)

    def on(self, n: int) -> date:
        return self.monday + timedelta(days=n)

    def day(self, n: int) -> str:
        return self.on(n).isoformat()

    async def call(self, method: str, path: str, session, body=None, status: int = 200) -> dict:
        kwargs = {"json": body} if body is not None else {}
        response = await self.http.request(method, path, headers=session.headers, **kwargs)
        assert response.status_code == status, response.text
        return response.json()

    async def pages(self, path: str, session, limit: int = 2) -> tuple[list[dict], int]:
        """Every item of a list, following its cursor; and the number of pages."""
        items, cursor, pages = [], None, 0
        joiner = "&" if "?" in path else "?"
        while True:
            query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            page = await self.call("GET", f"{path}{joiner}{query}", session)
            pages += 1
            assert len(page["items"]) <= limit
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items, pages


@pytest.fixture
async def tour(ctx, http, login):
    yield await Tour(ctx, http).build(login)
    await ctx.solves.drain(cancel=True)


async def test_a_campaign_plans_caravans_of_two_counties_over_sites_of_both(ctx, tour):
    huixian_caravan = await tour.caravan(tour.huixian)
    weihui_caravan = await tour.caravan(tour.weihui)
    linzhou_caravan = await tour.caravan(tour.linzhou)
    spare = await tour.caravan(tour.huixian)
    body = {
        "name": "沿黄科普行",
        "org_id": str(tour.city),
        "start_date": tour.day(0),
        "end_date": tour.day(4),
        "caravan_ids": [huixian_caravan, weihui_caravan],
    }
    who = tour.city_dispatcher
    denied = await tour.call("POST", "/api/v1/campaigns", tour.county_dispatcher, body, 403)
    assert denied["error"]["code"] == "forbidden"
    # Another city's caravan lies outside the city dispatcher's scope.
    outside = {**body, "caravan_ids": [huixian_caravan, linzhou_caravan]}
    refused = await tour.call("POST", "/api/v1/campaigns", who, outside, 403)
    assert refused["error"]["field"] == "caravan_ids"
    campaign = (await tour.call("POST", "/api/v1/campaigns", who, body, 201))["id"]
    shown = await tour.call("GET", f"/api/v1/campaigns/{campaign}", who)
    assert shown["name"] == "沿黄科普行" and shown["org_id"] == str(tour.city)
    assert (shown["start_date"], shown["end_date"]) == (tour.day(0), tour.day(4))
    assert set(shown["caravan_ids"]) == {huixian_caravan, weihui_caravan}
    await tour.call("GET", f"/api/v1/campaigns/{campaign}", tour.county_dispatcher, status=403)

    # Three long shows per county on the Monday: one caravan cannot do all six in a duty day.
    requests = {}
    for org, seat in [(tour.huixian, HUIXIAN), (tour.weihui, WEIHUI)]:
        for i, (east, north) in enumerate([(4, 3), (-5, 2), (2, -6)]):
            site = await tour.site(org, offset(east, north, seat), f"学校{org}{i}")
            request = await tour.request(site, tour.monday, tour.monday, 150)
            requests[request] = (org, site)
    elsewhere = await tour.site(tour.linzhou, offset(1, 1, LINZHOU), "林州学校")
    await tour.request(elsewhere, tour.monday, tour.monday)

    plan_body = {"org_id": str(tour.city), "campaign_id": campaign, "time_limit_s": 2}
    for change, field in [
        ({"start_date": tour.day(-1)}, "start_date"),
        ({"end_date": tour.day(5)}, "end_date"),
        ({"caravan_ids": [huixian_caravan, spare]}, "caravan_ids"),
        ({"org_id": str(tour.huixian)}, "campaign_id"),
    ]:
        bad = await tour.call("POST", "/api/v1/plans", who, {**plan_body, **change}, 400)
        assert bad["error"]["field"] == field, (change, bad)
    undated = {"org_id": str(tour.city), "time_limit_s": 1}
    missing = await tour.call("POST", "/api/v1/plans", who, undated, 400)
    assert missing["error"]["field"] == "start_date"

    dated = {**plan_body, "end_date": tour.day(0)}
    plan_id = (await tour.call("POST", "/api/v1/plans", who, dated, 202))["id"]
    await ctx.solves.wait(plan_id, 60)
    plan = await tour.call("GET", f"/api/v1/plans/{plan_id}", who)
    assert plan["status"] == "done", plan["error"]
    assert plan["campaign_id"] == campaign
    assert (plan["start_date"], plan["end_date"]) == (tour.day(0), tour.day(0))
    assert set(plan["caravan_ids"]) == {huixian_caravan, weihui_caravan}
    assert set(plan["request_ids"]) == set(requests)
    assert plan["unassigned"] == []
    home = {
        huixian_caravan: tour.depot_at[tour.huixian],
        weihui_caravan: tour.depot_at[tour.weihui],
    }
    assert {r["caravan_id"] for r in plan["routes"]} == set(home)
    for route in plan["routes"]:
        assert route["depot_id"] == route["end_depot_id"] == home[route["caravan_id"]]
    visited = {requests[s["request_id"]][0] for r in plan["routes"] for s in r["stops"]}
    assert visited == {tour.huixian, tour.weihui}

    # The whole period by default.
    whole = (await tour.call("POST", "/api/v1/plans", who, plan_body, 202))["id"]
    stored = await planning.get_plan_doc(ctx, whole)
    assert (stored["start_date"], stored["end_date"]) == (tour.day(0), tour.day(4))


async def test_a_caravan_is_in_one_campaign_at_a_time(tour):
    first = await tour.caravan(tour.huixian)
    second = await tour.caravan(tour.weihui)
    who = tour.city_dispatcher

    def campaign(name: str, start: int, end: int, *fleet: str) -> dict:
        return {
            "name": name,
            "org_id": str(tour.city),
            "start_date": tour.day(start),
            "end_date": tour.day(end),
            "caravan_ids": list(fleet),
        }

    await tour.call(
        "POST", "/api/v1/campaigns", who, campaign("沿黄科普行", 0, 4, first, second), 201
    )
    overlap = campaign("黄河科普周", 4, 8, second)
    refused = await tour.call("POST", "/api/v1/campaigns", who, overlap, 409)
    assert refused["error"]["code"] == "caravan_in_campaign"
    assert refused["error"]["field"] == "caravan_ids"
    assert "豫G00002" in refused["error"]["message"]
    assert "沿黄科普行" in refused["error"]["message"]
    await tour.call("POST", "/api/v1/campaigns", who, campaign("黄河科普周", 5, 8, second), 201)

    # Two dispatchers at the same moment: one campaign gets the caravan, the other is told.
    answers = await asyncio.gather(
        *(
            tour.http.post(
                "/api/v1/campaigns",
                json=campaign(f"秋季巡回{n}", 20, 30 + n, first),
                headers=who.headers,
            )
            for n in range(2)
        )
    )
    assert sorted(a.status_code for a in answers) == [201, 409]

    past = await tour.call("POST", "/api/v1/campaigns", who, campaign("往年", -60, -40, first), 400)
    assert past["error"]["field"] == "end_date"
    long = await tour.call("POST", "/api/v1/campaigns", who, campaign("全年", 40, 400, first), 400)
    assert long["error"]["field"] == "end_date"
    listed, _ = await tour.pages("/api/v1/campaigns", who)
    assert [c["name"] for c in listed][1:] == ["黄河科普周", "沿黄科普行"]  # newest first
    assert listed[0]["name"] in ("秋季巡回0", "秋季巡回1")
    assert (await tour.call("GET", "/api/v1/campaigns", tour.county_dispatcher))["items"] == []


async def test_a_county_plan_leaves_the_campaigns_caravans_to_them(ctx, tour):
    lent = await tour.caravan(tour.huixian)
    kept = await tour.caravan(tour.huixian)
    campaign = {
        "name": "沿黄科普行",
        "org_id": str(tour.city),
        "start_date": tour.day(7),
        "end_date": tour.day(11),
        "caravan_ids": [lent],
    }
    await tour.call("POST", "/api/v1/campaigns", tour.city_dispatcher, campaign, 201)
    who = tour.county_dispatcher
    plan = {
        "org_id": str(tour.huixian),
        "start_date": tour.day(0),
        "end_date": tour.day(9),
        "time_limit_s": 1,
    }
    refused = await tour.call("POST", "/api/v1/plans", who, {**plan, "caravan_ids": [lent]}, 409)
    assert refused["error"]["code"] == "caravan_in_campaign"
    assert "沿黄科普行" in refused["error"]["message"]
    created = await tour.call("POST", "/api/v1/plans", who, plan, 202)
    doc = await planning.get_plan_doc(ctx, created["id"])
    assert doc["caravan_ids"] == [ObjectId(kept)]
    before = {**plan, "end_date": tour.day(4), "caravan_ids": [lent]}  # the week before: free
    await tour.call("POST", "/api/v1/plans", who, before, 202)


async def test_lists_page_with_a_cursor_and_show_only_what_the_caller_may_see(ctx, tour):
    mine = [await tour.caravan(tour.huixian) for _ in range(5)]
    theirs = [await tour.caravan(tour.weihui) for _ in range(2)]
    await tour.caravan(tour.linzhou)
    county, city = tour.county_dispatcher, tour.city_dispatcher

    listed, pages = await tour.pages("/api/v1/caravans", county)
    assert [c["id"] for c in listed] == mine and pages == 3
    assert {c["plate"] for c in listed} == {f"豫G{n:05d}" for n in range(1, 6)}
    listed, _ = await tour.pages("/api/v1/caravans", city)
    assert [c["id"] for c in listed] == mine + theirs
    listed, _ = await tour.pages(f"/api/v1/caravans?org_id={tour.weihui}", city)
    assert [c["id"] for c in listed] == theirs
    for org in (tour.weihui, tour.city):
        await tour.call("GET", f"/api/v1/caravans?org_id={org}", county, status=403)
    # Someone who manages no fleet anywhere is refused before anything is read.
    nothing = await tour.call("GET", "/api/v1/caravans", tour.volunteer, status=403)
    assert nothing["error"]["code"] == "forbidden"
    bad = await tour.call("GET", "/api/v1/caravans?cursor=nonsense", county, status=400)
    assert bad["error"]["field"] == "cursor"

    depots, _ = await tour.pages("/api/v1/depots", county)
    assert [d["id"] for d in depots] == [tour.depot_at[tour.huixian]]
    assert depots[0]["location"]["coordinates"] == pytest.approx(list(HUIXIAN))
    depots, _ = await tour.pages("/api/v1/depots", city)
    assert {d["id"] for d in depots} == {tour.depot_at[tour.huixian], tour.depot_at[tour.weihui]}

    # Visit requests: by status, site and the dates they may be visited.
    school = await tour.site(tour.huixian, offset(3, 3, HUIXIAN), "城关小学")
    village = await tour.site(tour.huixian, offset(-9, 4, HUIXIAN), "山村小学")
    early = await tour.request(school, tour.on(0), tour.on(1))
    middle = await tour.request(village, tour.on(2), tour.on(4))
    late = await tour.request(school, tour.on(7), tour.on(9))
    other = await tour.site(tour.weihui, offset(1, 1, WEIHUI), "卫辉小学")
    await tour.request(other, tour.on(0), tour.on(4))
    await caravans.claim_for_publish(ctx, ObjectId(late), ObjectId())

    requests, pages = await tour.pages("/api/v1/visit-requests", county)
    assert [r["id"] for r in requests] == [early, middle, late] and pages == 2
    assert requests[0]["earliest_date"] == tour.day(0) and requests[0]["status"] == "open"

    async def ids(query: str) -> list[str]:
        page = await tour.call("GET", f"/api/v1/visit-requests?{query}", county)
        return [r["id"] for r in page["items"]]

    assert await ids("status=open") == [early, middle]
    assert await ids("status=scheduling") == [late]
    assert await ids(f"site_id={school}") == [early, late]
    assert await ids(f"from={tour.day(2)}&to={tour.day(3)}") == [middle]
    assert await ids(f"from={tour.day(1)}") == [early, middle, late]
    assert await ids(f"to={tour.day(1)}") == [early]
    reversed_range = f"/api/v1/visit-requests?from={tour.day(3)}&to={tour.day(1)}"
    assert (await tour.call("GET", reversed_range, county, status=400))["error"]["field"] == "to"
    wrong_status = await tour.call("GET", "/api/v1/visit-requests?status=lost", county, status=400)
    assert wrong_status["error"]["field"] == "status"
    site_admin = await tour.http.get("/api/v1/visit-requests", headers=tour.volunteer.headers)
    assert site_admin.status_code == 403  # not yet anyone's site admin
    await access.grant_role(ctx, ObjectId(tour.volunteer.user_id), "site_admin", tour.huixian)
    requests, _ = await tour.pages("/api/v1/visit-requests", tour.volunteer)
    assert [r["id"] for r in requests] == [early, middle, late]
    # A site admin asks for visits; the fleet is not theirs to manage.
    await tour.call("GET", "/api/v1/caravans", tour.volunteer, status=403)

    # Trips: the latest logged first, by caravan and dates.
    today = ctx.clock.local_now().date()
    logged = []
    for caravan, days_ago in [(mine[0], 3), (mine[0], 2), (mine[1], 2), (mine[0], 1)]:
        trip = await caravans.log_trip(
            ctx,
            caravans.NewTrip(
                caravan_id=caravan,
                date=today - timedelta(days=days_ago),
                odometer_start_km=100,
                odometer_end_km=150,
            ),
            logged_by=ObjectId(county.user_id),
        )
        logged.append(str(trip))
    await caravans.log_trip(
        ctx,
        caravans.NewTrip(caravan_id=theirs[0], date=today, odometer_start_km=0, odometer_end_km=10),
        logged_by=ObjectId(city.user_id),
    )
    trips, pages = await tour.pages("/api/v1/trips", county)
    assert [t["id"] for t in trips] == logged[::-1] and pages == 2
    assert trips[0]["km"] == 50 and trips[0]["visits"] == []
    trips, _ = await tour.pages(f"/api/v1/trips?caravan_id={mine[0]}", county)
    assert [t["id"] for t in trips] == [logged[3], logged[1], logged[0]]
    window = f"from={today - timedelta(days=2)}&to={today - timedelta(days=2)}"
    trips, _ = await tour.pages(f"/api/v1/trips?{window}", county)
    assert [t["id"] for t in trips] == [logged[2], logged[1]]
    assert len((await tour.pages("/api/v1/trips", city))[0]) == 5

    # Plans: the newest first, without their routes.
    made = []
    for org in (tour.huixian, tour.weihui, tour.huixian):
        new = planning.NewPlan(org_id=str(org), start_date=tour.on(0), end_date=tour.on(4))
        made.append(
            str(
                await planning.create_plan(ctx, new, created_by=ObjectId(city.user_id), start=False)
            )
        )
    plans, _ = await tour.pages("/api/v1/plans", county, limit=1)
    assert [p["id"] for p in plans] == [made[2], made[0]]
    assert plans[0]["status"] == "queued" and plans[0]["caravans"] == 5
    assert plans[0]["requests"] == 2 and plans[0]["campaign_id"] is None
    plans, _ = await tour.pages("/api/v1/plans", city)
    assert [p["id"] for p in plans] == made[::-1]
