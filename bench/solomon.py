"""Solomon VRPTW benchmark for the caravan planner's solver path.

    python bench/solomon.py [PATH ...] [--time-limit S] [--seed N]

PATH: instance files or folders of them (default: ../shared/data/solomon/*.txt when that folder
exists, else bench/data/solomon/*.txt). Prints one JSON line per instance, in the hierarchical
convention (fewest vehicles, then unrounded Euclidean distance):

    {"bench": "solomon", "instance", "vehicles", "distance", "bks_vehicles", "bks_distance",
     "gap_pct", "seconds", "feasible"}

The bks_* fields and gap_pct (distance against the BKS distance) come from a bks.csv beside the
instance file (its hier_* columns) and are null without one. A last line summarises:
{"bench": "solomon_summary", "instances", "mean_gap_pct", "vehicles_match_pct"}.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import vrplib  # noqa: E402

from server.vrp.solomon import solve_vrptw_instance  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "solomon"
BUNDLED = ROOT / "bench" / "data" / "solomon"


def instance_paths(args: list[str]) -> list[Path]:
    if not args:
        folder = SHARED if SHARED.is_dir() else BUNDLED
        args = [str(folder)]
    paths: list[Path] = []
    for arg in args:
        p = Path(arg)
        paths.extend(sorted(p.glob("*.txt")) if p.is_dir() else [p])
    return paths


def read_bks(folder: Path, cache: dict[Path, dict[str, tuple[int, float]]]):
    if folder not in cache:
        table: dict[str, tuple[int, float]] = {}
        bks = folder / "bks.csv"
        if bks.is_file():
            with bks.open(newline="") as fh:
                for row in csv.DictReader(fh):
                    table[row["instance"].upper()] = (
                        int(row["hier_vehicles"]),
                        float(row["hier_distance"]),
                    )
        cache[folder] = table
    return cache[folder]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="instance files or folders")
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per instance")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    bks_cache: dict[Path, dict[str, tuple[int, float]]] = {}
    gaps: list[float] = []
    matches: list[bool] = []
    count = 0
    for path in instance_paths(args.paths):
        inst = vrplib.read_instance(str(path), instance_format="solomon")
        res = solve_vrptw_instance(
            inst["node_coord"],
            inst["demand"],
            int(inst["capacity"]),
            int(inst["vehicles"]),
            inst["time_window"],
            inst["service_time"],
            time_limit_s=args.time_limit,
            seed=args.seed,
        )
        name = path.stem.upper()
        bks = read_bks(path.parent, bks_cache).get(name)
        gap = None
        if bks is not None:
            gap = round(100.0 * (res.distance - bks[1]) / bks[1], 3) + 0.0  # no -0.0
            gaps.append(gap)
            matches.append(res.vehicles == bks[0])
        count += 1
        line = {
            "bench": "solomon",
            "instance": name,
            "vehicles": res.vehicles,
            "distance": round(res.distance, 2),
            "bks_vehicles": bks[0] if bks else None,
            "bks_distance": bks[1] if bks else None,
            "gap_pct": gap,
            "seconds": round(res.seconds, 2),
            "feasible": res.feasible,
        }
        print(json.dumps(line), flush=True)

    summary = {
        "bench": "solomon_summary",
        "instances": count,
        "mean_gap_pct": round(sum(gaps) / len(gaps), 3) if gaps else None,
        "vehicles_match_pct": round(100.0 * sum(matches) / len(matches), 1) if matches else None,
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
