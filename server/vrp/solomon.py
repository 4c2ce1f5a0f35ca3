"""Solomon VRPTW (benchmark path).

:func:`solve_vrptw_instance` runs Solomon-style VRPTW instances (one depot, identical vehicles,
Euclidean distances) through the same model assembly and search, for the benchmark.

Used only by ``bench/solomon.py`` and the tests (which import it from here); the service never
imports it.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Sequence

import msgspec
import numpy as np
from pyvrp import Activity, ProblemData, Solution
from pyvrp.exceptions import PenaltyBoundWarning
from pyvrp.search import NeighbourhoodParams, compute_neighbours

from server.vrp.assembly import ClientSpec, VehicleTypeSpec, assemble
from server.vrp.model import ProgressCallback
from server.vrp.search import INT_MAX, Budget, search


class VrptwResult(msgspec.Struct, frozen=True, kw_only=True):
    routes: tuple[tuple[int, ...], ...]
    """Customer numbers (1..n, the depot being 0) of each route, in visiting order."""
    vehicles: int
    distance: float
    """Euclidean, double precision, no rounding (recomputed from the routes)."""
    feasible: bool
    """Checked again in double precision: time windows, duty horizon, capacity, all visited."""
    seconds: float


def _exact_check(
    routes: Sequence[Sequence[int]],
    d: np.ndarray,
    demand: np.ndarray,
    capacity: int,
    tw: np.ndarray,
    service: np.ndarray,
) -> bool:
    seen = [c for route in routes for c in route]
    if sorted(seen) != list(range(1, len(demand))):
        return False
    eps = 1e-9
    for route in routes:
        if sum(int(demand[c]) for c in route) > capacity:
            return False
        t, prev = float(tw[0, 0]), 0
        for c in route:
            t = max(t + d[prev, c], float(tw[c, 0]))
            if t > tw[c, 1] + eps:
                return False
            t += float(service[c])
            prev = c
        if t + d[prev, 0] > tw[0, 1] + eps:
            return False
    return True


def _eliminate_routes(
    data: ProblemData,
    neighbours: dict[Activity, list[Activity]],
    best: Solution,
    deadline: float,
    seed: int,
    demand: np.ndarray,
    capacity: int,
) -> tuple[ProblemData, Solution]:
    """Tries to remove routes one at a time until ``deadline``; returns the smallest fleet.

    Each attempt caps the fleet one below the best feasible plan and searches from a fresh
    random start until feasible, as PyVRP's ``minimise_fleet`` does, but keeps the plan found
    for the final distance search. (Warm starts from the plan minus its smallest route, with
    cheapest insertion of the orphans, found fewer reductions in the same time.)
    """
    vtype = data.vehicle_type(0)
    lower = math.ceil(int(demand.sum()) / max(capacity, 1))
    attempt = 0
    while best.num_routes() > lower and time.perf_counter() < deadline:
        attempt += 1
        fewer = data.replace(vehicle_types=[vtype.replace(num_available=best.num_routes() - 1)])

        def stop(cost: int) -> bool:
            return cost < INT_MAX or time.perf_counter() >= deadline

        found, _ = search(fewer, neighbours, stop, seed + attempt, None)
        if not found.is_feasible():
            break
        data, best = fewer, found
    return data, best


def solve_vrptw_instance(
    coords: np.ndarray,
    demand: np.ndarray,
    capacity: int,
    num_vehicles: int,
    time_windows: np.ndarray,
    service: np.ndarray,
    *,
    time_limit_s: float = 10.0,
    seed: int = 0,
    scale: int = 10_000,
    vehicle_cost: int | None = None,
    first_share: float = 0.05,
    fleet_share: float = 0.7,
    on_progress: ProgressCallback | None = None,
) -> VrptwResult:
    """Solves a Solomon-style VRPTW (row 0 the depot) in the hierarchical convention.

    Fewest vehicles first, then distance. Every vehicle carries a fixed cost far above any
    route length (``vehicle_cost``, default the sum of the longest out-and-back trips);
    Euclidean distances are multiplied by ``scale`` and rounded to integers, durations and
    service times rounded up and time windows rounded inwards, so a plan feasible for the solver
    is feasible in exact arithmetic. The time goes to a first plan (``first_share``), then to
    route elimination (``fleet_share``, see :func:`_eliminate_routes`), then to shortening the
    routes of the smallest fleet found. The reported distance is recomputed in double precision
    and the plan checked again (``feasible``).
    """
    started = time.perf_counter()
    coords = np.asarray(coords, dtype=np.float64)
    demand = np.asarray(demand, dtype=np.int64)
    tw = np.asarray(time_windows, dtype=np.float64)
    service = np.asarray(service, dtype=np.float64)
    n = len(coords)
    exact = np.sqrt(((coords[:, None, :] - coords[None, :, :]) ** 2).sum(axis=-1))
    dist = np.rint(exact * scale).astype(np.int64)
    dur = np.ceil(exact * scale - 1e-6).astype(np.int64)
    if vehicle_cost is None:
        vehicle_cost = int(2 * dist[0].max() * (n - 1)) + 1

    clients = [
        ClientSpec(
            loc=i,
            real=i,
            tw_early=math.ceil(tw[i, 0] * scale),
            tw_late=math.floor(tw[i, 1] * scale),
            service=math.ceil(service[i] * scale),
            prize=0,
            required=True,
            demand=int(demand[i]),
            request=i,
        )
        for i in range(1, n)
    ]
    vtype = VehicleTypeSpec(
        num=num_vehicles,
        depot=0,
        tw_early=math.ceil(tw[0, 0] * scale),
        tw_late=math.floor(tw[0, 1] * scale),
        shift_duration=INT_MAX,
        capacity=int(capacity),
        fixed_cost=vehicle_cost,
    )
    asm = assemble([tuple(p) for p in coords], dist, dur, 1, clients, [], [vtype])
    data = asm.data
    neighbours = compute_neighbours(data, NeighbourhoodParams())
    deadline = started + time_limit_s
    budget = Budget(started, time_limit_s, deadline, on_progress)
    span = deadline - time.perf_counter()

    with warnings.catch_warnings():
        # Route elimination drives penalties to their bound on purpose.
        warnings.simplefilter("ignore", PenaltyBoundWarning)
        # 1. A first plan, the fixed vehicle cost already pushing towards few routes.
        first_stop = Budget(started, time_limit_s, time.perf_counter() + first_share * span, None)
        best, _ = search(data, neighbours, first_stop, seed)
        # 2. Route elimination.
        if best.is_feasible():
            fleet_deadline = time.perf_counter() + fleet_share * span
            data, best = _eliminate_routes(
                data, neighbours, best, fleet_deadline, seed, demand, capacity
            )
        # 3. Shorten the routes of the smallest fleet found.
        best, _ = search(data, neighbours, budget, seed, best if best.is_feasible() else None)
    routes = tuple(
        tuple(asm.clients[a.idx].request for a in r.schedule() if a.is_client())
        for r in best.routes()
    )
    distance = sum(
        float(exact[0, r[0]] + sum(exact[a, b] for a, b in itertools.pairwise(r)) + exact[r[-1], 0])
        for r in routes
        if r
    )
    feasible = best.is_feasible() and _exact_check(routes, exact, demand, capacity, tw, service)
    return VrptwResult(
        routes=routes,
        vehicles=sum(1 for r in routes if r),
        distance=distance,
        feasible=feasible,
        seconds=time.perf_counter() - started,
    )
