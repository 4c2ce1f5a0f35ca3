"""Solomon VRPTW benchmark for the caravan planner's solver path.

    python bench/solomon.py [PATH ...] [--time-limit S] [--iterations N] [--seed N]
                            [--searches N] [--long-routes] [--update-reference]

PATH: instance files or folders of them (default: ../shared/data/solomon/*.txt when that folder
exists, else bench/data/solomon/*.txt). Prints one JSON line per instance, in the hierarchical
convention (fewest vehicles, then unrounded Euclidean distance):

    {"bench": "solomon", "instance", "vehicles", "distance", "bks_vehicles", "bks_distance",
     "gap_pct", "seconds", "iterations", "fleet_iterations", "fleet_seconds", "feasible"}

``iterations`` is the search's effort in all phases (it does not depend on the machine's load
as seconds do), ``fleet_iterations`` and ``fleet_seconds`` what went to removing routes. With
``--iterations N`` a solve ends after N iterations or the time limit, whichever comes first,
and its phases share out both the same way: on a shared machine, a run with an iteration budget
measures the search itself (on a core of its own, 10 s are about 10,000 iterations of type 1
and 8,000 of the long-route variants).

The bks_* fields and gap_pct (distance against the BKS distance) come from a bks.csv beside the
instance file (its hier_* columns) and are null without one.

``--long-routes`` runs, instead of each type 1 instance, its long-route variant (``C101L``…:
the same customers, the type 2 horizon and capacity of its series, every time window stretched
as the horizon; see ``server.vrp.solomon.long_route_instance``). These have no published BKS:
their reference is the best plan this planner has found (bench/data/solomon/long_routes.csv,
fewest vehicles then distance), and ``--update-reference`` writes a better one found by the run
into that table.

``--searches N`` (default: 2 on a machine with two cores or more, else 1) runs N searches of
each instance side by side, with seeds ``seed``, ``seed + 1``, …, each in a process of its own,
and keeps the best, as the service does with a plan when it has a core to spare; every second
search leans on removing routes (``server.vrp.solomon.ROUTE_REMOVAL_FIRST``). ``iterations`` is
then the sum over the searches and ``seconds`` the wall clock.

A last line summarises: {"bench": "solomon_summary", "instances", "mean_gap_pct",
"mean_gap_same_fleet_pct", "worst_gap_pct", "worst_instance", "vehicles_match_pct",
"time_limit_s", "iteration_limit", "searches", "mean_iterations"}. A plan with a vehicle more
than the reference is worse whatever its distance, yet usually shorter: its negative gap lowers
``mean_gap_pct``, so ``mean_gap_same_fleet_pct`` averages only the instances where the fleet
matches the reference.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from concurrent.futures import Executor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import vrplib  # noqa: E402

from server import processes  # noqa: E402
from server.vrp.solomon import (  # noqa: E402
    ROUTE_REMOVAL_FIRST,
    VrptwResult,
    best_of,
    long_route_instance,
    solve_read_instance,
)

SHARED = ROOT.parent / "shared" / "data" / "solomon"
BUNDLED = ROOT / "bench" / "data" / "solomon"
LONG_ROUTES = BUNDLED / "long_routes.csv"
Reference = dict[str, tuple[int, float]]


def instance_paths(args: list[str]) -> list[Path]:
    if not args:
        folder = SHARED if SHARED.is_dir() else BUNDLED
        args = [str(folder)]
    paths: list[Path] = []
    for arg in args:
        p = Path(arg)
        paths.extend(sorted(p.glob("*.txt")) if p.is_dir() else [p])
    return paths


def read_table(path: Path) -> Reference:
    table: Reference = {}
    if path.is_file():
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                table[row["instance"].upper()] = (
                    int(row["hier_vehicles"]),
                    float(row["hier_distance"]),
                )
    return table


def write_long_routes(table: Reference) -> None:
    with LONG_ROUTES.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["instance", "hier_vehicles", "hier_distance"])
        for name in sorted(table):
            vehicles, distance = table[name]
            out.writerow([name, vehicles, f"{distance:.2f}"])


def solve(inst: dict, args: argparse.Namespace, pool: Executor | None) -> VrptwResult:
    """One instance, by ``args.searches`` searches (in ``pool`` when more than one)."""
    options = {"time_limit_s": args.time_limit, "iteration_limit": args.iterations}
    if pool is None:
        return solve_read_instance(inst, seed=args.seed, **options)
    futures = [
        pool.submit(
            solve_read_instance,
            inst,
            seed=args.seed + k,
            **options,
            **(ROUTE_REMOVAL_FIRST if k % 2 else {}),
        )
        for k in range(args.searches)
    ]
    return best_of([f.result() for f in futures])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="instance files or folders")
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per instance")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--searches",
        type=int,
        default=2 if (os.cpu_count() or 1) >= 2 else 1,
        help="searches side by side, the best kept",
    )
    parser.add_argument("--long-routes", action="store_true", help="long-route variants")
    parser.add_argument(
        "--update-reference", action="store_true", help="keep better long-route plans"
    )
    args = parser.parse_args(argv)

    bks_cache: dict[Path, Reference] = {}
    long_routes = read_table(LONG_ROUTES)
    improved = False
    gaps: list[tuple[float, str]] = []
    same_fleet_gaps: list[float] = []
    matches: list[bool] = []
    iterations: list[int] = []
    pool = processes.process_pool(args.searches) if args.searches > 1 else None
    for path in instance_paths(args.paths):
        inst = vrplib.read_instance(str(path), instance_format="solomon")
        name = path.stem.upper()
        if args.long_routes:
            inst = long_route_instance(inst, name)
            name = inst["name"]
            bks = long_routes.get(name)
        else:
            if path.parent not in bks_cache:
                bks_cache[path.parent] = read_table(path.parent / "bks.csv")
            bks = bks_cache[path.parent].get(name)
        res = solve(inst, args, pool)
        gap = None
        if bks is not None:
            gap = round(100.0 * (res.distance - bks[1]) / bks[1], 3) + 0.0  # no -0.0
            gaps.append((gap, name))
            matches.append(res.vehicles == bks[0])
            if res.vehicles == bks[0]:
                same_fleet_gaps.append(gap)
        found = (res.vehicles, round(res.distance, 2))
        better = bks is None or found < bks
        if args.long_routes and args.update_reference and res.feasible and better:
            long_routes[name] = found
            improved = True
        iterations.append(res.iterations)
        line = {
            "bench": "solomon",
            "instance": name,
            "vehicles": res.vehicles,
            "distance": round(res.distance, 2),
            "bks_vehicles": bks[0] if bks else None,
            "bks_distance": bks[1] if bks else None,
            "gap_pct": gap,
            "seconds": round(res.seconds, 2),
            "iterations": res.iterations,
            "fleet_iterations": res.fleet_iterations,
            "fleet_seconds": round(res.fleet_seconds, 2),
            "feasible": res.feasible,
        }
        print(json.dumps(line), flush=True)
    if pool is not None:
        pool.shutdown()
    if improved:
        write_long_routes(long_routes)

    worst = max(gaps, default=None)
    summary = {
        "bench": "solomon_summary",
        "instances": len(iterations),
        "mean_gap_pct": round(sum(g for g, _ in gaps) / len(gaps), 3) if gaps else None,
        "mean_gap_same_fleet_pct": (
            round(sum(same_fleet_gaps) / len(same_fleet_gaps), 3) if same_fleet_gaps else None
        ),
        "worst_gap_pct": worst[0] if worst else None,
        "worst_instance": worst[1] if worst else None,
        "vehicles_match_pct": round(100.0 * sum(matches) / len(matches), 1) if matches else None,
        "time_limit_s": args.time_limit,
        "iteration_limit": args.iterations,
        "searches": args.searches,
        "mean_iterations": round(sum(iterations) / len(iterations)) if iterations else None,
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
