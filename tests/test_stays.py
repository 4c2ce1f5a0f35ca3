"""Stays (中国流动科技馆 tours: days or weeks at one site): placed by the planner beside day visits
with no unit in two places on one day, checked from the outside; over HTTP, requested,
planned, published as one activity per opening day, logged per day and counted in the KPIs."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import msgspec
import pytest
from bson import ObjectId

from server.clock import SHANGHAI
from server.domain import activities
from server.vrp import (
    REASON_CAPACITY,
    REASON_EXCLUDED,
    REASON_NO_ALLOWED_DAY,
    REASON_PIN_INFEASIBLE,
    CaravanDay,
    Depot,
    Pin,
    PlanProblem,
    PlanResult,
    Request,
    Stay,
    Unit,
    place_stays,
    solve_plan,
)
from tests.test_caravans import H, World, offset, settings_overrides  # noqa: F401 (a fixture)
from tests.test_routing import check_plan

# County seats of 新乡市 (a standing tour of five counties), and the depot at 辉县市.
COUNTIES = {
    "huixian": (113.805468, 35.462312),
    "weihui": (114.064907, 35.398494),
    "huojia": (113.660060, 35.261969),
    "yuanyang": (113.940046, 35.065993),
    "fengqiu": (114.418700, 35.041198),
}
DEPOT = COUNTIES["huixian"]


def check_stays(problem: PlanProblem, result: PlanResult) -> None:
    """Every unit-day holds at most one stay or one route; stays keep their days."""
    stays = {s.request_id: s for s in problem.stays}
    units = {u.unit_id: u for u in problem.units}
    calendar = problem.calendar_days or tuple(range(problem.horizon_days))
    held: dict[tuple[str, int], str] = {}
    for placed in result.stays:
        stay = stays[placed.request_id]
        assert placed.close_day - placed.open_day + 1 == stay.open_days
        assert placed.open_day - placed.first_day == stay.setup_days
        assert placed.last_day - placed.close_day == stay.teardown_days
        assert stay.earliest <= placed.open_day and placed.close_day <= stay.latest
        assert placed.first_day >= 0 and placed.last_day < problem.horizon_days
        for day in range(placed.first_day, placed.last_day + 1):
            assert day not in units[placed.unit_id].blocked_days, "a stay over maintenance"
            assert (placed.unit_id, day) not in held, "a unit in two places on one day"
            held[(placed.unit_id, day)] = placed.request_id
    for route in result.routes:
        if route.stops:
            key = (route.caravan_id, calendar[route.day])
            assert key not in held, f"a route on a day of stay {held.get(key)}"
            held[key] = "route"
    unassigned = {u.request_id for u in result.unassigned}
    planned = {p.request_id for p in result.stays}
    assert not planned & unassigned and planned | unassigned >= set(stays)


def tour_problem(time_limit_s: float = 3.0) -> PlanProblem:
    """Six weeks from a Monday: the five-county tour of week-long stays (a day to set up, a day
    to take down), two units (one with a maintenance day), three caravans on day visits too."""
    horizon = 42
    weekdays = tuple(d for d in range(horizon) if d % 7 < 5)
    units = ("museum-1", "museum-2", "caravan-1", "caravan-2", "caravan-3")
    blocked = {"museum-2": (10,)}
    stays = tuple(
        Stay(
            request_id=f"tour-{name}",
            site_id=f"hall-{name}",
            lng=at[0],
            lat=at[1],
            earliest=7 * k + 1,
            latest=7 * k + 14,
            open_days=7,
            setup_days=1,
            teardown_days=1,
            priority=8,
        )
        for k, (name, at) in enumerate(COUNTIES.items())
    )
    requests = []
    for n in range(24):
        lng, lat = offset(-20 + (n * 7) % 40, -15 + (n * 11) % 30, DEPOT)
        first = (n * 3) % 25
        requests.append(
            Request(
                request_id=f"school-{n}",
                site_id=f"school-{n}",
                lng=lng,
                lat=lat,
                allowed_days=tuple(i for i, d in enumerate(weekdays) if first <= d <= first + 9),
                service_s=90 * 60,
                priority=5,
            )
        )
    return PlanProblem(
        depots=(Depot(depot_id="huixian", lng=DEPOT[0], lat=DEPOT[1]),),
        caravan_days=tuple(
            CaravanDay(
                caravan_id=u,
                day=i,
                depot_id="huixian",
                duty_start_s=7 * H,
                duty_end_s=19 * H,
                max_duty_s=9 * H,
            )
            for u in units
            for i, d in enumerate(weekdays)
            if d not in blocked.get(u, ())
        ),
        requests=tuple(requests),
        stays=stays,
        units=tuple(
            Unit(unit_id=u, depot_id="huixian", blocked_days=blocked.get(u, ())) for u in units
        ),
        horizon_days=horizon,
        calendar_days=weekdays,
        time_limit_s=time_limit_s,
    )


def test_a_five_county_tour_of_week_long_stays_beside_day_visits_is_feasible():
    problem = tour_problem()
    result = solve_plan(problem)
    check_plan(problem, result)
    check_stays(problem, result)
    assert {p.request_id for p in result.stays} == {s.request_id for s in problem.stays}
    assert sum(len(r.stops) for r in result.routes) == len(problem.requests)
    # The stays took unit-days the day visits would otherwise have had.
    calendar = problem.calendar_days
    taken = {(p.unit_id, d) for p in result.stays for d in range(p.first_day, p.last_day + 1)}
    assert any((v.caravan_id, calendar[v.day]) in taken for v in problem.caravan_days)


def test_stays_left_out_say_why_and_the_higher_priority_ones_are_placed():
    base = tour_problem(time_limit_s=1.0)
    one_unit = (Unit(unit_id="museum-1", depot_id="huixian", blocked_days=(3, 20)),)

    def stay(request_id: str, earliest: int, latest: int, days: int, priority: int = 5) -> Stay:
        lng, lat = COUNTIES["weihui"]
        return Stay(
            request_id=request_id, site_id="hall", lng=lng, lat=lat, earliest=earliest,
            latest=latest, open_days=days, setup_days=1, teardown_days=1, priority=priority,
        )  # fmt: skip

    stays = (
        stay("low", 5, 12, 7, priority=2),
        stay("high", 5, 12, 7, priority=9),  # the same week: one of the two fits
        stay("short-range", 25, 27, 5),
        stay("over-maintenance", 18, 22, 5),  # every span of it holds day 20
        stay("pinned-elsewhere", 25, 40, 5),
        stay("left-out", 25, 40, 5),
        stay("beyond-the-plan", 39, 45, 5),
    )
    problem = PlanProblem(
        depots=base.depots,
        caravan_days=(),
        requests=(),
        stays=stays,
        units=one_unit,
        stay_pins=(Pin(request_id="pinned-elsewhere", caravan_id="museum-2", day=30),),
        excluded=("left-out",),
        horizon_days=42,
    )
    outcome = place_stays(problem)
    assert outcome.proven
    assert [p.request_id for p in outcome.placed] == ["high"]
    reasons = {u.request_id: u.reason for u in outcome.unassigned}
    assert reasons == {
        "low": REASON_CAPACITY,
        "short-range": REASON_NO_ALLOWED_DAY,
        "over-maintenance": REASON_NO_ALLOWED_DAY,
        "pinned-elsewhere": REASON_PIN_INFEASIBLE,
        "left-out": REASON_EXCLUDED,
        "beyond-the-plan": REASON_NO_ALLOWED_DAY,
    }
    pinned = msgspec.structs.replace(
        problem, units=(*one_unit, Unit(unit_id="museum-2", depot_id="huixian"))
    )
    [placed] = [p for p in place_stays(pinned).placed if p.request_id == "pinned-elsewhere"]
    assert (placed.unit_id, placed.open_day) == ("museum-2", 30)


# -- over HTTP ---------------------------------------------------------------------------------


@pytest.fixture
async def county(ctx, http, login):
    built = await World(ctx, http).build(login)
    yield built
    await ctx.solves.drain(cancel=True)


def stay_body(county: World, site_id: str, first: int, last: int, days: int, **extra) -> dict:
    return {
        "site_id": site_id,
        "earliest_date": (county.monday + timedelta(days=first)).isoformat(),
        "latest_date": (county.monday + timedelta(days=last)).isoformat(),
        "duration_days": days,
        "open_from": "09:00",
        "open_until": "16:30",
        "shift_volunteers": 3,
        **extra,
    }


async def test_bad_stay_requests_are_refused_in_chinese_and_change_nothing(ctx, county):
    site = await county.site("卫辉市科技馆", offset(20, -5))
    refusals = {
        "duration_min": {**stay_body(county, site, 0, 9, 5), "duration_min": 120},
        "duration_days": stay_body(county, site, 0, 3, 5),
        "open_from": stay_body(county, site, 0, 9, 5, open_from="17:00"),
    }
    for field, body in refusals.items():
        refused = await county.post("/api/v1/visit-requests", body, status=400)
        assert refused["error"]["field"] == field, refused
        assert any("\u4e00" <= ch <= "\u9fff" for ch in refused["error"]["message"])
    neither = stay_body(county, site, 0, 9, 5)
    del neither["duration_days"]
    assert (await county.post("/api/v1/visit-requests", neither, status=400))["error"][
        "field"
    ] == "duration_min"
    await county.post("/api/v1/visit-requests", stay_body(county, site, 0, 90, 61), status=400)
    day_visit = {**neither, "duration_min": 481}
    await county.post("/api/v1/visit-requests", day_visit, status=400)
    assert await ctx.db["visit_requests"].count_documents({}) == 0


async def test_a_stay_is_planned_published_per_day_logged_and_counted(ctx, http, login, county):
    museum, caravan = await county.caravan(1), await county.caravan(2)
    hall = await county.site("卫辉市科技馆", offset(20, -5))
    stay = (await county.post(
        "/api/v1/visit-requests", stay_body(county, hall, 0, 11, 5), status=201
    ))["id"]  # fmt: skip
    schools = [await county.site(f"第{n}小学", offset(3 * n, 2)) for n in range(1, 5)]
    visits = [await county.request(s, 0, 11, 90) for s in schools]
    plan = await county.until_done(await county.plan(days=14, time_limit_s=2))

    [planned] = plan["stays"]
    assert planned["request_id"] == stay and planned["site_name"] == "卫辉市科技馆"
    assert planned["caravan_id"] in (museum, caravan)
    first, last = date.fromisoformat(planned["first_day"]), date.fromisoformat(planned["last_day"])
    assert (
        (last - first).days == 4
        and county.monday <= first
        and last <= county.monday + timedelta(11)
    )
    setup, teardown = planned["setup_from"], planned["teardown_until"]
    assert (
        setup == (first - timedelta(1)).isoformat()
        and teardown == (last + timedelta(1)).isoformat()
    )
    assert plan["totals"]["stays"] == 1
    placed = county.check({**plan, "request_ids": [r for r in plan["request_ids"] if r != stay]})
    assert set(placed) == set(visits)
    for caravan_id, day in placed.values():
        assert not (caravan_id == planned["caravan_id"] and setup <= day <= teardown)

    published = (await county.post(f"/api/v1/plans/{plan['id']}/publish"))["published"]
    stay_days = [p for p in published if p["request_id"] == stay]
    assert [p["date"] for p in stay_days] == [(first + timedelta(n)).isoformat() for n in range(5)]
    for p in stay_days:
        activity = await activities.get_doc(ctx, p["activity_id"])
        assert activity["capacity"] == 3 and activity["status"] == "published"
        opens = activity["starts_at"].astimezone(SHANGHAI)
        assert (opens.date().isoformat(), opens.hour, opens.minute) == (p["date"], 9, 0)
        assert (activity["ends_at"] - activity["starts_at"]).total_seconds() == 7.5 * H
    again = (await county.post(f"/api/v1/plans/{plan['id']}/publish"))["published"]
    assert again == published
    request = await ctx.db["visit_requests"].find_one({"_id": ObjectId(stay)})
    assert request["status"] == "scheduled" and request["date"] == planned["first_day"]

    # Each opening day is a trip of the unit with that day's visitors, confirmed by the site.
    ctx.clock.advance(
        (datetime.combine(last, datetime.min.time(), SHANGHAI) - ctx.clock.now()).total_seconds()
        + 20 * H
    )
    unit = planned["caravan_id"]
    odometer = 1000.0
    for n, people in enumerate((410, 530)):
        day = (first + timedelta(n)).isoformat()
        body = {
            "caravan_id": unit,
            "date": day,
            "odometer_start_km": odometer,
            "odometer_end_km": odometer + 2,
            "visits": [{"request_id": stay, "beneficiaries": people}],
        }
        odometer += 2
        trip = (await county.post("/api/v1/trips", body, status=201))["id"]
        await county.post(f"/api/v1/trips/{trip}/visits/{stay}/confirm", session=county.site_admin)
    outside = {
        "caravan_id": unit,
        "date": setup,
        "odometer_start_km": odometer,
        "odometer_end_km": odometer,
        "visits": [{"request_id": stay, "beneficiaries": 5}],
    }
    refused = await county.post("/api/v1/trips", outside, status=400)
    assert refused["error"]["field"] == "visits[0].request_id"
    kpis = (
        await http.get(
            f"/api/v1/caravans/kpis?year={first.year}&org_id={county.county}",
            headers=county.dispatcher.headers,
        )
    ).json()
    assert (kpis["total"]["activities"], kpis["total"]["beneficiaries"]) == (2, 940)
