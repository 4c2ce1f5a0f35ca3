"""A generated caravan month in the mountain counties of 林州, 辉县, 卫辉 and 修武.

    python bench/caravan_month.py [--time-limit S] [--seed N] [--caravans N] [--schools N]
                                  [--days N] [--case month600] [--compare S] [--searches N]

106 schools scattered within ~25 km of the four county seats, 1–2 caravans based at each seat
(4–8 in all, fixed by the seed), 22 working days, each school asking for one 90-minute show on
one of 5–10 consecutive working days, school hours 08:00–17:00, duty 07:30–17:30 with at most
9 hours out. Plans the month with ``server.vrp.solve_plan`` and, in the same run, with a
greedy nearest-neighbour dispatcher (day by day, caravan by caravan: go to the nearest
unvisited school allowed that day whose show still fits its hours and the duty day, until none
does, then home), on the same travel matrix. Prints one JSON line:

    {"bench": "caravan_month", "requests", "planned", "km", "caravans_used", "seconds",
     "caravans", "caravan_days_used", "greedy_planned", "greedy_km", "km_ratio", ...}

``km_ratio`` is our km over the greedy km (lower is better; compare ``planned`` too). Without
``--time-limit`` the plan gets the service's default, scaled to the plan (visits × caravan-days,
``server.vrp.scaled_time_limit_s``, capped at the API's maximum); the line states the limit used
(``time_limit_s``) and the search's effort in ``iterations`` (independent of the machine's load,
unlike ``seconds``).

``--searches N`` (default: 2 on a machine with two cores or more, else 1) solves as the service
does when it has a core to spare: N searches side by side in processes of their own, seeds
``seed``, ``seed + SIDE_SEED``, …, the plan of least cost kept (``server.vrp.best_plan``);
``iterations`` is then the sum over the searches and ``seconds`` the wall clock.

``--case month600`` is 600 requests for 30 caravans over 20 working days (a provincial month).
``--compare S`` solves the same month again with S seconds and adds ``compare_time_limit_s``,
``compare_km``, ``compare_planned``, ``compare_iterations`` and ``km_vs_compare_pct`` (our km
over theirs, in per cent above; the default is good when it is within 2 % of 120 s):

    python bench/caravan_month.py --case month600 --compare 120
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from concurrent.futures import Executor
from pathlib import Path

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from server import processes  # noqa: E402
from server.domain.planning.models import MAX_TIME_LIMIT_S  # noqa: E402
from server.vrp import (  # noqa: E402
    SIDE_SEED,
    CaravanDay,
    Depot,
    PlanProblem,
    PlanResult,
    Request,
    best_plan,
    scaled_time_limit_s,
    solve_plan,
    travel_matrices,
)

H = 3600
COUNTY_SEATS = ("林州市", "辉县市", "卫辉市", "修武县")
ADCODE_FILES = (
    ROOT / "server" / "data" / "henan_adcodes.csv",
    ROOT.parent / "shared" / "data" / "geo" / "henan_adcodes.csv",
)
WORKING_DAYS = 22
SCHOOL_HOURS = (8 * H, 17 * H)
SHOW_S = 90 * 60
DUTY = (7 * H + 30 * 60, 17 * H + 30 * 60)
MAX_DUTY_S = 9 * H


def county_seats() -> list[tuple[str, float, float]]:
    path = next((p for p in ADCODE_FILES if p.is_file()), None)
    if path is None:
        raise SystemExit("henan_adcodes.csv not found in server/data or ../shared/data/geo")
    with path.open(encoding="utf-8", newline="") as fh:
        rows = {row["name"]: row for row in csv.DictReader(fh)}
    return [(n, float(rows[n]["longitude"]), float(rows[n]["latitude"])) for n in COUNTY_SEATS]


CASES = {"month600": {"schools": 600, "caravans": 30, "days": 20}}


def make_month(
    seed: int,
    schools: int,
    caravans: int | None,
    time_limit_s: float | None,
    days: int = WORKING_DAYS,
) -> PlanProblem:
    rng = np.random.default_rng(seed)
    seats = county_seats()
    depots = tuple(Depot(depot_id=name, lng=lng, lat=lat) for name, lng, lat in seats)
    per_seat = [int(k) for k in rng.integers(1, 3, size=len(seats))]
    if caravans is not None:
        per_seat = [caravans // len(seats) + (i < caravans % len(seats)) for i in range(len(seats))]
    vehicles = tuple(
        CaravanDay(
            caravan_id=f"{name}-{k + 1}",
            day=day,
            depot_id=name,
            duty_start_s=DUTY[0],
            duty_end_s=DUTY[1],
            max_duty_s=MAX_DUTY_S,
        )
        for (name, _, _), count in zip(seats, per_seat, strict=True)
        for k in range(count)
        for day in range(days)
    )
    requests = []
    for i in range(schools):
        _, lng, lat = seats[int(rng.integers(len(seats)))]
        radius = 25.0 * math.sqrt(rng.uniform(0.02, 1.0))
        angle = rng.uniform(0, 2 * math.pi)
        span = int(rng.integers(5, 11))
        first = int(rng.integers(0, days - span + 1))
        requests.append(
            Request(
                request_id=f"req-{i:03d}",
                site_id=f"school-{i:03d}",
                lng=lng + radius * math.cos(angle) / (111.32 * math.cos(math.radians(lat))),
                lat=lat + radius * math.sin(angle) / 110.57,
                allowed_days=tuple(range(first, first + span)),
                service_s=SHOW_S,
                open_hours=(SCHOOL_HOURS,),
            )
        )
    if time_limit_s is None:
        time_limit_s = scaled_time_limit_s(len(requests), len(vehicles), MAX_TIME_LIMIT_S)
    return PlanProblem(
        depots=depots,
        caravan_days=vehicles,
        requests=tuple(requests),
        time_limit_s=float(time_limit_s),
        seed=seed,
    )


def greedy(problem: PlanProblem) -> dict:
    """Nearest-neighbour dispatch on the planner's own travel matrix."""
    depot_index = {d.depot_id: i for i, d in enumerate(problem.depots)}
    n_depots = len(problem.depots)
    lngs = [d.lng for d in problem.depots] + [r.lng for r in problem.requests]
    lats = [d.lat for d in problem.depots] + [r.lat for r in problem.requests]
    dist, dur = travel_matrices(lngs, lats, problem.road_factor, problem.speed_kmh)
    unvisited = set(range(len(problem.requests)))
    metres = 0
    used: set[str] = set()
    days_used = 0
    for day in sorted({v.day for v in problem.caravan_days}):
        for v in sorted(
            (v for v in problem.caravan_days if v.day == day), key=lambda v: v.caravan_id
        ):
            home = depot_index[v.depot_id]
            here, clock, leave = home, v.duty_start_s, None
            route_m = 0
            while True:
                best = None
                for ri in unvisited:
                    r = problem.requests[ri]
                    if day not in r.allowed_days:
                        continue
                    site = n_depots + ri
                    for open_s, close_s in r.windows_on(day):
                        start = max(clock + int(dur[here, site]), open_s)
                        end = start + r.service_s
                        back = end + int(dur[site, home])
                        out = leave if leave is not None else start - int(dur[home, site])
                        if (
                            end <= close_s
                            and back <= v.duty_end_s
                            and back - max(out, v.duty_start_s) <= (v.max_duty_s or 10**9)
                        ):
                            key = (int(dist[here, site]), ri)
                            if best is None or key < best[0]:
                                best = (key, ri, site, end, out)
                            break
                if best is None:
                    break
                _, ri, site, end, out = best
                if leave is None:
                    leave = max(out, v.duty_start_s)
                route_m += int(dist[here, site])
                here, clock = site, end
                unvisited.discard(ri)
            if here != home:
                route_m += int(dist[here, home])
                metres += route_m
                used.add(v.caravan_id)
                days_used += 1
    return {
        "planned": len(problem.requests) - len(unvisited),
        "km": metres / 1000,
        "caravans_used": len(used),
        "caravan_days_used": days_used,
    }


def timed_solve(
    problem: PlanProblem, pool: Executor | None, searches: int
) -> tuple[PlanResult, float]:
    """The plan of ``problem``: one search here, or ``searches`` side by side in ``pool``."""
    started = time.perf_counter()
    if pool is None:
        result = solve_plan(problem)
    else:
        seeded = [
            msgspec.structs.replace(problem, seed=problem.seed + k * SIDE_SEED)
            for k in range(searches)
        ]
        result = best_plan(list(pool.map(solve_plan, seeded)))
    return result, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=None, help="default: scaled")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--case", choices=sorted(CASES), default=None)
    parser.add_argument("--schools", type=int, default=106)
    parser.add_argument("--caravans", type=int, default=None, help="default: 1-2 per seat")
    parser.add_argument("--days", type=int, default=WORKING_DAYS, help="working days")
    parser.add_argument("--compare", type=float, default=None, help="also solve with S seconds")
    parser.add_argument(
        "--searches",
        type=int,
        default=2 if (os.cpu_count() or 1) >= 2 else 1,
        help="searches side by side, the best kept",
    )
    args = parser.parse_args(argv)
    if args.case is not None:
        for key, value in CASES[args.case].items():
            setattr(args, key, value)

    problem = make_month(args.seed, args.schools, args.caravans, args.time_limit, args.days)
    pool = processes.process_pool(args.searches) if args.searches > 1 else None
    result, seconds = timed_solve(problem, pool, args.searches)
    base = greedy(problem)

    planned = sum(len(rt.stops) for rt in result.routes)
    km = result.distance_m / 1000
    line = {
        "bench": "caravan_month",
        "case": args.case,
        "requests": len(problem.requests),
        "planned": planned,
        "km": round(km, 1),
        "caravans_used": len({rt.caravan_id for rt in result.routes}),
        "seconds": round(seconds, 2),
        "iterations": result.iterations,
        "caravans": len({v.caravan_id for v in problem.caravan_days}),
        "caravan_days": len(problem.caravan_days),
        "caravan_days_used": len(result.routes),
        "feasible": result.feasible,
        "unassigned": len(result.unassigned),
        "greedy_planned": base["planned"],
        "greedy_km": round(base["km"], 1),
        "greedy_caravan_days_used": base["caravan_days_used"],
        "km_ratio": round(km / base["km"], 3) if base["km"] else None,
        "time_limit_s": problem.time_limit_s,
        "time_limit_scaled": args.time_limit is None,
        "searches": args.searches,
    }
    if args.compare is not None:
        other, other_seconds = timed_solve(
            msgspec.structs.replace(problem, time_limit_s=args.compare), pool, args.searches
        )
        other_km = other.distance_m / 1000
        line |= {
            "compare_time_limit_s": args.compare,
            "compare_km": round(other_km, 1),
            "compare_planned": sum(len(rt.stops) for rt in other.routes),
            "compare_seconds": round(other_seconds, 2),
            "compare_iterations": other.iterations,
            "km_vs_compare_pct": round(100.0 * (km - other_km) / other_km, 2) if other_km else None,
        }
    if pool is not None:
        pool.shutdown()
    print(json.dumps(line, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
