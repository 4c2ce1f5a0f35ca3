"""The caravan planner (server.vrp): plans checked independently of the solver.

Every plan is verified from the outside: shows start inside the site's opening hours of that
day and end before closing, routes stay inside the duty window and the maximum duty, each
request is visited at most once, pins hold, and the travel between stops is at least the
great-circle distance times the road factor at the configured speed (computed here again).
"""

from __future__ import annotations

import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.vrp import (
    REASON_CAPACITY,
    REASON_EXCLUDED,
    REASON_NO_ALLOWED_DAY,
    REASON_PIN_INFEASIBLE,
    REASON_UNREACHABLE,
    CaravanDay,
    Depot,
    Pin,
    PlanProblem,
    PlanResult,
    ProgressToQueue,
    Request,
    solve_plan,
    travel_matrices,
)
from server.vrp.solomon import solve_read_instance

H = 3600
# County seats (adcode table): 林州市, 辉县市, 卫辉市, 修武县.
SEATS = {
    "linzhou": (113.820129, 36.083046),
    "huixian": (113.805468, 35.462312),
    "weihui": (114.064907, 35.398494),
    "xiuwu": (113.447755, 35.223514),
}
SOLOMON = Path(__file__).resolve().parent.parent / "bench" / "data" / "solomon"


def haversine_m(lng1: float, lat1: float, lng2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_009.0 * math.asin(math.sqrt(h))


def offset(lng: float, lat: float, east_km: float, north_km: float) -> tuple[float, float]:
    return (
        lng + east_km / (111.32 * math.cos(math.radians(lat))),
        lat + north_km / 110.57,
    )


def check_plan(problem: PlanProblem, result: PlanResult) -> None:
    """Verifies a plan against the problem, without trusting the solver."""
    assert result.feasible
    depots = {d.depot_id: d for d in problem.depots}
    vehicles = {(v.caravan_id, v.day): v for v in problem.caravan_days}
    requests = {r.request_id: r for r in problem.requests}
    pins = {p.request_id: p for p in problem.pins}
    speed = problem.speed_kmh / 3.6

    def leg(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
        metres = haversine_m(*a, *b) * problem.road_factor
        return metres, metres / speed

    visited: list[str] = []
    seen_routes: set[tuple[str, int]] = set()
    total = 0
    for route in result.routes:
        key = (route.caravan_id, route.day)
        assert key in vehicles, f"route for a caravan-day that is not on duty: {key}"
        assert key not in seen_routes, f"two routes for {key}"
        seen_routes.add(key)
        v = vehicles[key]
        max_duty = v.max_duty_s if v.max_duty_s is not None else v.duty_end_s - v.duty_start_s
        assert route.depot_id == v.depot_id
        assert v.duty_start_s <= route.leave_s <= route.return_s <= v.duty_end_s
        assert route.duration_s == route.return_s - route.leave_s <= max_duty
        assert route.stops, "empty routes are not reported"
        if v.max_shows is not None:
            assert len(route.stops) <= v.max_shows

        depot = depots[v.depot_id]
        here = (depot.lng, depot.lat)
        clock = route.leave_s
        metres = 0.0
        for stop in route.stops:
            r = requests[stop.request_id]
            visited.append(r.request_id)
            assert stop.site_id == r.site_id
            if r.request_id in pins:
                assert (pins[r.request_id].caravan_id, pins[r.request_id].day) == key
            else:
                assert route.day in r.allowed_days
            there = (r.lng, r.lat)
            m, s = leg(here, there)
            metres += m
            assert stop.arrive_s >= clock + s - 1, "arrives faster than the road allows"
            assert stop.arrive_s <= stop.start_s
            assert stop.depart_s == stop.start_s + r.service_s
            assert any(
                start <= stop.start_s and stop.depart_s <= end for start, end in r.windows_on(v.day)
            ), f"{r.request_id} on day {v.day} outside its opening hours"
            here, clock = there, stop.depart_s
        m, s = leg(here, (depot.lng, depot.lat))
        metres += m
        assert route.return_s >= clock + s - 1
        assert abs(route.distance_m - metres) <= len(route.stops) + 2
        total += route.distance_m
    assert result.distance_m == total

    assert len(visited) == len(set(visited)), "a request is visited twice"
    unassigned = [u.request_id for u in result.unassigned]
    assert len(unassigned) == len(set(unassigned))
    assert set(visited).isdisjoint(unassigned)
    assert set(visited) | set(unassigned) == set(requests)
    for pin in problem.pins:
        if pin.request_id not in problem.excluded:
            assert pin.request_id in visited or pin.request_id in unassigned


def school(rid: str, seat: str, east_km: float, north_km: float, days=(0, 1, 2), **kw) -> Request:
    lng, lat = offset(*SEATS[seat], east_km, north_km)
    kw.setdefault("service_s", 90 * 60)
    return Request(
        request_id=rid, site_id=f"site-{rid}", lng=lng, lat=lat, allowed_days=tuple(days), **kw
    )


def small_problem(**kw) -> PlanProblem:
    depots = tuple(
        Depot(depot_id=name, lng=SEATS[name][0], lat=SEATS[name][1])
        for name in ("linzhou", "huixian")
    )
    caravans = [("c1", "linzhou"), ("c2", "linzhou"), ("c3", "huixian")]
    vehicles = tuple(
        CaravanDay(
            caravan_id=c,
            day=d,
            depot_id=dep,
            duty_start_s=7 * H + 30 * 60,
            duty_end_s=17 * H + 30 * 60,
            max_duty_s=9 * H,
        )
        for c, dep in caravans
        for d in range(3)
    )
    requests = (
        school("r01", "linzhou", 5, 3),
        school("r02", "linzhou", -8, 10, days=(0,)),
        school("r03", "linzhou", 12, -4, open_hours=((8 * H, 12 * H),)),
        school("r04", "linzhou", -3, -15, days=(1, 2), priority=2),
        school("r05", "linzhou", 20, 6, open_hours=((14 * H, 17 * H),)),
        school("r06", "linzhou", 2, 22, open_hours_by_day={1: (), 2: ((8 * H, 11 * H),)}),
        school("r07", "huixian", 4, 4),
        school("r08", "huixian", -10, 2, days=(2,)),
        school("r09", "huixian", 6, -12, open_hours=((8 * H, 11 * H), (14 * H, 17 * H))),
        school("r10", "huixian", 15, 15, service_s=60 * 60),
        school("r11", "huixian", -2, -20, days=(0, 1)),
        school("r12", "huixian", 9, 1),
    )
    kw.setdefault("time_limit_s", 1.5)
    return PlanProblem(depots=depots, caravan_days=vehicles, requests=requests, **kw)


def stops_by_request(result: PlanResult) -> dict[str, tuple[str, int]]:
    return {s.request_id: (rt.caravan_id, rt.day) for rt in result.routes for s in rt.stops}


def test_travel_matrices_match_great_circle_times_road_factor():
    pts = list(SEATS.values())
    dist, dur = travel_matrices([p[0] for p in pts], [p[1] for p in pts], 1.3, 40.0)
    assert dist.dtype == np.int64 and dur.dtype == np.int64
    for i, a in enumerate(pts):
        for j, b in enumerate(pts):
            metres = haversine_m(*a, *b) * 1.3
            assert abs(dist[i, j] - metres) <= 1
            assert abs(dur[i, j] - metres / (40 / 3.6)) <= 1
    # 林州 to 辉县 is about 69 km as the crow flies.
    assert 85_000 < dist[0, 1] < 95_000


def test_small_scenario_is_planned_feasibly():
    problem = small_problem()
    result = solve_plan(problem)
    check_plan(problem, result)
    assert result.unassigned == ()
    assert result.runtime_s < problem.time_limit_s + 0.5
    # Opening hours that differ by day: r06 is closed on day 1 and morning-only on day 2.
    day = stops_by_request(result)["r06"][1]
    assert day in (0, 2)


def test_pins_are_kept_and_excluded_requests_left_out():
    pins = (
        # Sent from 辉县 to a school north of 林州, on a day it would not otherwise choose.
        Pin(request_id="r06", caravan_id="c3", day=0),
        Pin(request_id="r07", caravan_id="c1", day=2),
        # A pin outside the request's allowed days (r02 allows day 0 only): the pin wins.
        Pin(request_id="r02", caravan_id="c2", day=1),
        Pin(request_id="r12", caravan_id="nobody", day=1),
    )
    problem = small_problem(pins=pins, excluded=("r10",))
    result = solve_plan(problem)
    check_plan(problem, result)
    where = stops_by_request(result)
    assert where["r06"] == ("c3", 0)
    assert where["r07"] == ("c1", 2)
    assert where["r02"] == ("c2", 1)
    reasons = {u.request_id: u.reason for u in result.unassigned}
    assert reasons == {"r10": REASON_EXCLUDED, "r12": REASON_PIN_INFEASIBLE}
    assert "r10" not in where


def test_conflicting_pins_are_reported_not_moved():
    # Four three-hour shows pinned to one nine-hour duty day: at most two fit.
    pinned = ("r01", "r03", "r05", "r12")
    base = small_problem()
    problem = msgspec.structs.replace(
        base,
        requests=tuple(
            msgspec.structs.replace(r, service_s=3 * H) if r.request_id in pinned else r
            for r in base.requests
        ),
        pins=tuple(Pin(request_id=r, caravan_id="c1", day=1) for r in pinned),
    )
    result = solve_plan(problem)
    check_plan(problem, result)
    where = stops_by_request(result)
    kept = [r for r in pinned if r in where]
    assert all(where[r] == ("c1", 1) for r in kept)
    assert 1 <= len(kept) <= 2
    assert {u.request_id: u.reason for u in result.unassigned} == {
        r: REASON_PIN_INFEASIBLE for r in pinned if r not in kept
    }


def test_infeasible_requests_are_reported_with_a_reason():
    base = small_problem()
    extra = (
        # 郑州: about 2.5 hours each way by the model, plus a 6-hour show: not in 9 hours.
        Request(
            request_id="far",
            site_id="zhengzhou",
            lng=113.625328,
            lat=34.746611,
            allowed_days=(0, 1, 2),
            service_s=6 * H,
        ),
        # No caravan is on duty on day 7.
        school("weekend", "linzhou", 3, 3, days=(7,)),
        # Open for an hour only: a 90-minute show never fits.
        school("short", "huixian", 2, 2, open_hours=((9 * H, 10 * H),)),
        # Open only in the evening, after every duty day has ended.
        school("evening", "huixian", 3, 1, open_hours=((18 * H, 21 * H),)),
    )
    problem = PlanProblem(
        depots=base.depots,
        caravan_days=base.caravan_days,
        requests=base.requests + extra,
        time_limit_s=1.5,
    )
    result = solve_plan(problem)
    check_plan(problem, result)
    reasons = {u.request_id: u.reason for u in result.unassigned}
    assert reasons == {
        "far": REASON_UNREACHABLE,
        "weekend": REASON_NO_ALLOWED_DAY,
        "short": REASON_UNREACHABLE,
        "evening": REASON_UNREACHABLE,
    }
    assert all(u.detail for u in result.unassigned)


def test_low_priority_is_dropped_first_when_oversubscribed():
    depot = Depot(depot_id="xiuwu", lng=SEATS["xiuwu"][0], lat=SEATS["xiuwu"][1])
    vehicles = (
        CaravanDay(
            caravan_id="c1",
            day=0,
            depot_id="xiuwu",
            duty_start_s=8 * H,
            duty_end_s=17 * H,
            max_shows=3,
        ),
    )
    priorities = {"a": 1, "b": 3, "c": 1, "d": 2, "e": 3, "f": 1}
    requests = tuple(
        school(rid, "xiuwu", 2 + i, (-1) ** i * 2, days=(0,), service_s=45 * 60, priority=p)
        for i, (rid, p) in enumerate(priorities.items())
    )
    problem = PlanProblem(
        depots=(depot,), caravan_days=vehicles, requests=requests, time_limit_s=1.0
    )
    result = solve_plan(problem)
    check_plan(problem, result)
    assert set(stops_by_request(result)) == {"b", "d", "e"}
    assert {u.request_id: u.reason for u in result.unassigned} == {
        "a": REASON_CAPACITY,
        "c": REASON_CAPACITY,
        "f": REASON_CAPACITY,
    }


def test_solve_plan_runs_in_a_process_pool_and_reports_progress():
    problem = small_problem(time_limit_s=1.5)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        queue = manager.Queue()
        result = pool.submit(solve_plan, problem, ProgressToQueue(queue)).result(timeout=60)
        updates = []
        while not queue.empty():
            updates.append(queue.get())
    check_plan(problem, result)
    assert len(updates) >= 3
    fractions = [f for f, _ in updates]
    assert fractions == sorted(fractions)
    assert 0.0 <= fractions[0] < 0.5 and fractions[-1] == 1.0
    assert updates[-1][1] == result.cost
    costs = [c for _, c in updates if c is not None]
    assert costs == sorted(costs, reverse=True), "best cost never gets worse"


def month_problem(
    n_caravans: int, n_days: int, n_requests: int, time_limit_s: float, seed: int = 7
) -> PlanProblem:
    rng = np.random.default_rng(seed)
    names = list(SEATS)
    depots = tuple(Depot(depot_id=n, lng=SEATS[n][0], lat=SEATS[n][1]) for n in names)
    vehicles = tuple(
        CaravanDay(
            caravan_id=f"c{c:02d}",
            day=d,
            depot_id=names[c % 4],
            duty_start_s=7 * H + 30 * 60,
            duty_end_s=17 * H + 30 * 60,
            max_duty_s=9 * H,
        )
        for c in range(n_caravans)
        for d in range(n_days)
    )
    requests = []
    for i in range(n_requests):
        radius, angle = 25 * math.sqrt(rng.random()), 2 * math.pi * rng.random()
        span = int(rng.integers(5, 11))
        first = int(rng.integers(0, n_days - span + 1))
        requests.append(
            school(
                f"r{i:03d}",
                names[int(rng.integers(4))],
                radius * math.cos(angle),
                radius * math.sin(angle),
                days=range(first, first + span),
                priority=int(rng.integers(1, 4)),
            )
        )
    return PlanProblem(
        depots=depots,
        caravan_days=vehicles,
        requests=tuple(requests),
        time_limit_s=time_limit_s,
    )


def test_thirty_caravans_twenty_days_three_hundred_requests_within_time_limit():
    problem = month_problem(30, 20, 300, time_limit_s=5.0)
    started = time.perf_counter()
    result = solve_plan(problem)
    elapsed = time.perf_counter() - started
    assert elapsed < problem.time_limit_s + 1.0
    check_plan(problem, result)
    planned = sum(len(rt.stops) for rt in result.routes)
    assert planned >= 290
    assert all(u.reason == REASON_CAPACITY for u in result.unassigned)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    n_caravans=st.integers(1, 3),
    n_days=st.integers(1, 4),
    n_requests=st.integers(0, 14),
    seed=st.integers(0, 10_000),
    max_shows=st.one_of(st.none(), st.integers(0, 3)),
)
def test_random_small_plans_are_feasible(n_caravans, n_days, n_requests, seed, max_shows):
    rng = np.random.default_rng(seed)
    names = list(SEATS)
    depots = tuple(Depot(depot_id=n, lng=SEATS[n][0], lat=SEATS[n][1]) for n in names)
    vehicles = tuple(
        CaravanDay(
            caravan_id=f"c{c}",
            day=d,
            depot_id=names[int(rng.integers(4))],
            duty_start_s=int(rng.integers(6, 10)) * H,
            duty_end_s=int(rng.integers(14, 20)) * H,
            max_duty_s=int(rng.integers(5, 10)) * H,
            max_shows=max_shows,
        )
        for c in range(n_caravans)
        for d in range(n_days)
        if rng.random() < 0.8
    )
    requests = []
    for i in range(n_requests):
        open_s = int(rng.integers(6, 14)) * H
        days = sorted({int(x) for x in rng.integers(0, n_days + 1, size=int(rng.integers(1, 4)))})
        requests.append(
            school(
                f"r{i}",
                names[int(rng.integers(4))],
                float(rng.normal(0, 20)),
                float(rng.normal(0, 20)),
                days=days,
                service_s=int(rng.integers(30, 180)) * 60,
                open_hours=((open_s, open_s + int(rng.integers(1, 9)) * H),),
                priority=int(rng.integers(1, 4)),
            )
        )
    pins = ()
    if requests and vehicles and rng.random() < 0.7:
        v = vehicles[int(rng.integers(len(vehicles)))]
        pins = (Pin(request_id="r0", caravan_id=v.caravan_id, day=v.day),)
    problem = PlanProblem(
        depots=depots,
        caravan_days=vehicles,
        requests=tuple(requests),
        pins=pins,
        time_limit_s=0.3,
    )
    check_plan(problem, solve_plan(problem))


def test_bad_input_is_refused():
    base = small_problem()
    with pytest.raises(ValueError, match="duplicate request_id"):
        solve_plan(
            PlanProblem(
                depots=base.depots,
                caravan_days=base.caravan_days,
                requests=base.requests + base.requests[:1],
            )
        )
    with pytest.raises(ValueError, match="unknown depot"):
        solve_plan(
            PlanProblem(
                depots=base.depots,
                caravan_days=(
                    CaravanDay(
                        caravan_id="x", day=0, depot_id="nowhere", duty_start_s=0, duty_end_s=H
                    ),
                ),
                requests=(),
            )
        )


def test_solomon_c101_reaches_ten_vehicles():
    vrplib = pytest.importorskip("vrplib")
    inst = vrplib.read_instance(str(SOLOMON / "C101.txt"), instance_format="solomon")
    result = solve_read_instance(inst, time_limit_s=2.0)
    assert result.feasible
    assert result.vehicles == 10
    assert sorted(c for route in result.routes for c in route) == list(range(1, 101))
    assert result.distance == pytest.approx(828.94, rel=0.01)
    assert result.seconds < 3.0
