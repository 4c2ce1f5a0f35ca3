"""The planner's budget: a default time limit scaled to the plan and stated in its response,
the search's effort in iterations on the plan, no fleet minimisation for caravan plans, route
removal that stops when it stalls, a side search that stops when told, and the totals of the
run before a re-plan beside the latest."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from server import vrp
from server.domain import planning
from server.vrp.solomon import VrptwResult, best_of, long_route_instance, solve_read_instance
from tests.test_caravans import offset, settings_overrides, world  # noqa: F401 (fixtures)
from tests.test_routing import check_plan, month_problem, small_problem

SOLOMON = Path(__file__).resolve().parent.parent / "bench" / "data" / "solomon"


def test_the_default_time_limit_grows_with_visits_times_caravan_days_up_to_the_cap():
    cap = planning.MAX_TIME_LIMIT_S
    small = vrp.scaled_time_limit_s(4, 10, cap)
    month = vrp.scaled_time_limit_s(300, 600, cap)
    province = vrp.scaled_time_limit_s(600, 600, cap)
    assert vrp.MIN_TIME_LIMIT_S <= small < month < province < cap
    assert province >= 90, "600 visits over 600 caravan-days need well over the old 30 s"
    assert vrp.scaled_time_limit_s(5000, 30 * 62, cap) == cap
    assert vrp.scaled_time_limit_s(0, 0, cap) == vrp.MIN_TIME_LIMIT_S


def test_a_caravan_plan_spends_its_iterations_on_distance_not_on_the_fleet():
    problem = small_problem()
    result = vrp.solve_plan(problem)
    check_plan(problem, result)
    assert result.iterations > 0
    assert result.fleet_iterations == 0
    assert not result.interrupted


def test_a_search_told_to_stop_returns_its_best_plan_at_once():
    problem = month_problem(6, 10, 60, time_limit_s=30.0)
    started = time.perf_counter()
    result = vrp.solve_plan(problem, should_stop=lambda: True)
    assert time.perf_counter() - started < 10
    assert result.interrupted
    check_plan(problem, result)


def test_a_long_route_instance_is_solomons_type_2_construction():
    vrplib = pytest.importorskip("vrplib")
    inst = vrplib.read_instance(str(SOLOMON / "R101.txt"), instance_format="solomon")
    long = long_route_instance(inst, "R101")
    assert long["name"] == "R101L"
    assert long["capacity"] == 1000
    assert long["time_window"][0].tolist() == [0, 1000]
    factor = 1000 / 230
    assert long["time_window"][1:] == pytest.approx(inst["time_window"][1:] * factor)
    assert (long["node_coord"] == inst["node_coord"]).all()
    assert (long["service_time"] == inst["service_time"]).all()


# Measured in iterations (the time limit only a safety net), so a loaded machine changes how
# long it takes, not what it finds; alone all the same (make test runs `solo` tests last).
@pytest.mark.solo
def test_route_removal_stops_when_it_stalls_and_leaves_the_rest_to_distance():
    vrplib = pytest.importorskip("vrplib")
    inst = vrplib.read_instance(str(SOLOMON / "R101.txt"), instance_format="solomon")
    budget = 2_000
    result = solve_read_instance(inst, time_limit_s=60.0, iteration_limit=budget, fleet_patience=20)
    assert result.feasible
    assert result.seconds < 60.0, "the iterations ran out first"
    assert result.fleet_iterations > 0
    # Stalled long before its cap (70 % of the budget); the distance search had the rest.
    assert result.fleet_iterations < 0.5 * budget, result.fleet_iterations
    assert result.iterations >= 0.95 * budget


@pytest.mark.solo
@pytest.mark.parametrize(
    "limit",
    [
        {"fleet_patience_cap": 20, "fleet_attempt_share": 1.0},
        {"fleet_attempt_share": 0.05},
    ],
    ids=["patience cap", "share of the search"],
)
def test_a_route_removal_attempt_ends_at_its_limit_however_patient(limit):
    vrplib = pytest.importorskip("vrplib")
    inst = vrplib.read_instance(str(SOLOMON / "R101.txt"), instance_format="solomon")
    budget = 2_000
    result = solve_read_instance(
        inst, time_limit_s=60.0, iteration_limit=budget, fleet_patience=10_000, **limit
    )
    assert result.feasible
    assert result.fleet_iterations > 0
    # Patience alone would have kept removing routes up to the phase's 70 %.
    assert result.fleet_iterations < 0.5 * budget, result.fleet_iterations


@pytest.mark.solo
def test_no_route_removal_is_tried_that_the_phase_cannot_afford():
    vrplib = pytest.importorskip("vrplib")
    inst = vrplib.read_instance(str(SOLOMON / "RC101.txt"), instance_format="solomon")
    budget = 2_000
    # With this seed the removal from five long routes to four takes about 800 iterations, and
    # less than that is left of the phase (70 % of the budget) after it: the attempt at three,
    # which would have run to the phase's end, is not made, and distance has the rest.
    result = solve_read_instance(
        long_route_instance(inst, "RC101"),
        time_limit_s=60.0,
        iteration_limit=budget,
        seed=3,
        fleet_patience=10_000,
        fleet_patience_cap=10_000,
        fleet_attempt_share=1.0,
    )
    assert result.feasible
    assert result.vehicles == 4
    assert 0.25 * budget < result.fleet_iterations < 0.5 * budget, result.fleet_iterations
    assert result.iterations >= 0.95 * budget


async def test_without_a_limit_the_plan_states_the_scaled_one_and_compares_with_the_run_before(
    world,  # noqa: F811 (the fixture)
):
    await world.caravan(1)
    await world.caravan(2)
    spots = [(5, 3), (-6, 4), (2, -7), (9, 9)]
    requests = [
        await world.request(await world.site(f"第{i + 1}小学", offset(*at)), 0, 4, 90)
        for i, at in enumerate(spots)
    ]
    body = {
        "org_id": str(world.county),
        "start_date": world.monday.isoformat(),
        "end_date": (world.monday + timedelta(days=4)).isoformat(),
    }
    plan_id = (await world.post("/api/v1/plans", body, status=202))["id"]
    first = await world.until_done(plan_id)
    world.check(first)
    scaled = vrp.scaled_time_limit_s(len(spots), 2 * 5, planning.MAX_TIME_LIMIT_S)
    assert first["time_limit_s"] == scaled
    assert first["requested_time_limit_s"] is None
    assert first["iterations"] > 0
    assert first["searches"] == (2 if (os.cpu_count() or 1) >= 2 else 1)
    assert first["totals"] == {
        "run": 1,
        "distance_km": first["total_distance_km"],
        "visits": len(spots),
        "unassigned": 0,
        "stays": 0,
    }
    assert first["previous"] is None

    await world.post(f"/api/v1/plans/{plan_id}/exclusions", {"request_id": requests[0]})
    await world.post(f"/api/v1/plans/{plan_id}/replan", status=202)
    second = await world.until_done(plan_id)
    world.check(second)
    assert second["runs"] == 2
    assert second["previous"] == first["totals"]
    assert second["totals"] == {
        "run": 2,
        "distance_km": second["total_distance_km"],
        "visits": len(spots) - 1,
        "unassigned": 1,
        "stays": 0,
    }
    assert second["time_limit_s"] == vrp.scaled_time_limit_s(
        len(spots) - 1, 2 * 5, planning.MAX_TIME_LIMIT_S
    )


async def test_a_limit_asked_for_is_the_limit_used(world):  # noqa: F811 (the fixture)
    await world.caravan(1)
    await world.request(await world.site("第一小学", offset(4, 4)), 0, 4, 90)
    plan = await world.until_done(await world.plan(time_limit_s=2))
    assert plan["time_limit_s"] == plan["requested_time_limit_s"] == 2
    assert plan["iterations"] > 0


def test_the_best_of_several_searches_is_feasible_then_fewest_vehicles_then_shortest():
    def result(vehicles: int, distance: float, feasible: bool = True) -> VrptwResult:
        routes = tuple((n,) for n in range(1, vehicles + 1))
        return VrptwResult(
            routes=routes, vehicles=vehicles, distance=distance, feasible=feasible,
            seconds=float(vehicles), iterations=100 * vehicles, fleet_iterations=vehicles,
        )  # fmt: skip

    shortest, fewer, infeasible = result(11, 900.0), result(10, 950.0), result(9, 800.0, False)
    best = best_of([shortest, infeasible, fewer])
    assert (best.vehicles, best.distance, best.feasible) == (10, 950.0, True)
    assert (best.iterations, best.fleet_iterations, best.seconds) == (3000, 30, 11.0)
    assert best_of([result(10, 951.0), fewer]).distance == 950.0
