"""Solomon VRPTW (benchmark path).

:func:`solve_vrptw_instance` runs Solomon-style VRPTW instances (one depot, identical vehicles,
Euclidean distances) through the same model assembly and search, for the benchmark;
:func:`long_route_instance` makes a long-route instance (Solomon's type 2 construction) from a
type 1 one.

Used only by ``bench/solomon.py`` and the tests (which import it from here); the service never
imports it.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Final

import msgspec
import numpy as np
from pyvrp import Activity, IteratedLocalSearchParams, ProblemData, Solution
from pyvrp.exceptions import PenaltyBoundWarning
from pyvrp.search import NeighbourhoodParams, compute_neighbours

from server.vrp.assembly import ClientSpec, VehicleTypeSpec, assemble
from server.vrp.model import ProgressCallback
from server.vrp.search import DISTANCE_HISTORY, INT_MAX, Budget, search

FLEET_PATIENCE: Final = 350
"""Iterations per route left after which an attempt to remove a route gives up, at most
``FLEET_PATIENCE_CAP``: about 3,000 for nine or ten routes (the hardest removals of Solomon's
type 1 take about as many), fewer for a few long routes, where one route less is a bigger step
and a removal that works is found at once."""
FLEET_PATIENCE_CAP: Final = 3_500
FLEET_SHARE: Final = 0.7
"""At most this share of the time limit goes to removing routes."""
FLEET_ATTEMPT_SHARE: Final = 0.15
"""At most this share of the search's effort (its time limit or iteration limit, whichever runs
out first) goes to one attempt to remove a route; the search leaning on removal
(``ROUTE_REMOVAL_FIRST``) allows 0.5 and finds the hard removals. At 2 s a last, failing attempt
took most of the time the long routes needed for distance. A share of the iterations expected
from the first plan's pace was not enough: an attempt's iterations on an infeasible fleet are
two to three times slower than a first plan's. On the long-route variants at 2 s (seed 0), the
mean gap where the fleet matched was +2.28 % with that, +0.96 % and +1.06 % (two runs) with
0.35 of the effort, +0.73 % with 0.25 and +0.54 % with 0.15; at 10 s, with 0.15, type 1 and the
long routes kept every best-known fleet (means +0.12 % and +0.10 %, worst +0.79 % and +1.96 %)."""
ROUTE_REMOVAL_FIRST: Final = {
    "fleet_share": 0.8,
    "fleet_patience": 600,
    "fleet_patience_cap": 5_000,
    "fleet_attempt_share": 0.5,
}
"""Options of the second of two searches run side by side: it leans on removing routes (more
patience with a hard removal, a larger share), the first on distance, and the best plan is kept
(fewest vehicles, then distance). On type 1 at 10 s (seed 0, 2026-12-04) the first alone found
the best-known fleet on 23 of 29, this one on 29, and the pair's plans were 0.13 % longer than
the best known on average (worst +0.79 %); two searches alike had missed two fleets. The hard
last removals (R103, R104, R112, RC105) take 3,000 to 4,700 iterations."""
NEIGHBOURS: Final = 30
"""Each customer's granular neighbourhood: its 30 nearest (PyVRP's proximity), not PyVRP's
default 50, so an iteration is about 1.5 times as fast. On the twelve hardest of type 1 and its
long-route variants at 10 s (six seeds each, one search per seed; ``bench/solomon.py --searches
1 --seed N PATH`` gives one), the best-known fleet came out as often as with 50 or more often,
and routes were shorter (R107 +1.3 % instead of +2.2 %, R111 +1.6 % instead of +4.0 %, means
over the seeds). 40 was between the two; 50 for route removal alone lost vehicles."""


class VrptwResult(msgspec.Struct, frozen=True, kw_only=True):
    routes: tuple[tuple[int, ...], ...]
    """Customer numbers (1..n, the depot being 0) of each route, in visiting order."""
    vehicles: int
    distance: float
    """Euclidean, double precision, no rounding (recomputed from the routes)."""
    feasible: bool
    """Checked again in double precision: time windows, duty horizon, capacity, all visited."""
    seconds: float
    iterations: int = 0
    """Iterations of the search in all phases (the effort, independent of the machine's load)."""
    fleet_iterations: int = 0
    """Of those, the iterations spent removing routes."""
    fleet_seconds: float = 0.0


# Solomon's type 2 against type 1, per series: the depot's horizon and the vehicle capacity.
_LONG_ROUTE_SERIES = {"C": (3390, 700), "R": (1000, 1000), "RC": (960, 1000)}


def long_route_instance(instance: dict, name: str) -> dict:
    """A long-route instance made from a Solomon type 1 ``instance`` (as ``vrplib`` reads it),
    the way Solomon's type 2 is built: the same customers, the depot's horizon widened to the
    type 2 horizon of its series (C 3390, R 1000, RC 960) and the capacity raised to the type 2
    capacity (C 700, R and RC 1000). Every time window is stretched by the same factor as the
    horizon, so windows keep their place in the day and grow wider; service times and distances
    stay, so routes get long. A stretched window stays reachable and returnable, since the type
    1 window was."""
    series = name.upper().rstrip("0123456789")
    horizon, capacity = _LONG_ROUTE_SERIES[series]
    tw = np.asarray(instance["time_window"], dtype=np.float64)
    factor = horizon / float(tw[0, 1])
    return {
        **instance,
        "name": f"{name.upper()}L",
        "capacity": capacity,
        "time_window": tw * factor,
    }


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


class _Effort:
    """What a solve has spent, as a share of its limit: of its time or, with an
    ``iteration_limit``, of its iterations, whichever is further. With an iteration limit the
    benchmark measures the same search on a loaded machine as on an idle one."""

    def __init__(self, started: float, time_limit_s: float, iteration_limit: int | None) -> None:
        self.started, self.time_limit_s = started, max(time_limit_s, 1e-9)
        self.iteration_limit, self.iterations = iteration_limit, 0

    def share(self) -> float:
        spent = (time.perf_counter() - self.started) / self.time_limit_s
        if self.iteration_limit:
            spent = max(spent, self.iterations / self.iteration_limit)
        return spent

    def until(self, share: float) -> Callable[[int], bool]:
        """A stopping criterion, counting iterations, that stops at ``share`` of the limit."""

        def stop(cost: int) -> bool:
            self.iterations += 1
            return self.share() >= share

        return stop


class _Counted:
    """A stopping criterion that also stops after ``limit`` iterations (None: no limit)."""

    def __init__(self, stop: Callable[[int], bool], limit: int | None = None) -> None:
        self.stop, self.limit, self.iterations = stop, limit, 0

    def __call__(self, cost: int) -> bool:
        self.iterations += 1
        return self.stop(cost) or (self.limit is not None and self.iterations > self.limit)


def _eliminate_routes(
    data: ProblemData,
    neighbours: dict[Activity, list[Activity]],
    best: Solution,
    effort: _Effort,
    phase_end: float,
    seed: int,
    lower: int,
    patience: int,
    patience_cap: int = FLEET_PATIENCE_CAP,
    attempt_share: float = FLEET_ATTEMPT_SHARE,
) -> tuple[ProblemData, Solution, int]:
    """Removes routes one at a time until removal stalls; returns the smallest fleet found and
    the iterations spent.

    Each attempt caps the fleet one below the best feasible plan and searches from a fresh
    random start until feasible, as PyVRP's ``minimise_fleet`` does, but keeps the plan found
    for the final distance search. (Warm starts from the plan minus its smallest route, with
    cheapest insertion of the orphans, found fewer reductions in the same time.) An attempt
    stalls when it has found no feasible plan after ``patience`` iterations per route it is
    allowed (at most ``patience_cap``) or ``attempt_share`` of the ``effort``; the phase ends at
    ``phase_end``, a share of the effort. A removal is not tried when what is left of the phase
    is less than what the last one took: with fewer routes each is harder, and a removal that
    cannot finish only takes time from shortening the routes (R112 at 10 s: 10 routes to 9 took
    4,648 iterations, the next attempt then spent 2.7 s of what was left). (Allowing an attempt
    more after a hard removal, on the same grounds, only spent the phase's cap on removals that
    never came.)
    """
    vtype = data.vehicle_type(0)
    attempt = spent = 0
    last_took = 0.0
    while best.num_routes() > lower:
        before = effort.share()
        if phase_end - before <= last_took:
            break
        attempt += 1
        fewer = data.replace(vehicle_types=[vtype.replace(num_available=best.num_routes() - 1)])
        spent_up = effort.until(min(phase_end, before + attempt_share))

        def until_feasible(cost: int, spent_up: Callable[[int], bool] = spent_up) -> bool:
            return spent_up(cost) or cost < INT_MAX

        allowed = best.num_routes() - 1
        stop = _Counted(until_feasible, min(patience * allowed, patience_cap))
        # Seeds of their own: with ``seed + attempt``, the second attempt of the search seeded 0
        # was the first of the one seeded 1, and both failed or succeeded alike.
        found, iterations = search(fewer, neighbours, stop, seed * 1_000 + attempt, None)
        spent += iterations
        if not found.is_feasible():
            break
        data, best = fewer, found
        last_took = effort.share() - before
    return data, best, spent


def best_of(results: Sequence[VrptwResult]) -> VrptwResult:
    """The best of several searches of one instance, in the hierarchical convention (feasible,
    fewest vehicles, least distance); its iterations are those of every search."""
    best = min(results, key=lambda r: (not r.feasible, r.vehicles, r.distance))
    return msgspec.structs.replace(
        best,
        iterations=sum(r.iterations for r in results),
        fleet_iterations=sum(r.fleet_iterations for r in results),
        seconds=max(r.seconds for r in results),
    )


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
    fleet_share: float = FLEET_SHARE,
    fleet_patience: int = FLEET_PATIENCE,
    fleet_patience_cap: int = FLEET_PATIENCE_CAP,
    iteration_limit: int | None = None,
    fleet_attempt_share: float = FLEET_ATTEMPT_SHARE,
    on_progress: ProgressCallback | None = None,
) -> VrptwResult:
    """Solves a Solomon-style VRPTW (row 0 the depot) in the hierarchical convention.

    Fewest vehicles first, then distance. Every vehicle carries a fixed cost far above any
    route length (``vehicle_cost``, default the sum of the longest out-and-back trips);
    Euclidean distances are multiplied by ``scale`` and rounded to integers, durations and
    service times rounded up and time windows rounded inwards, so a plan feasible for the solver
    is feasible in exact arithmetic. The time goes to a first plan (``first_share``), then to
    route elimination until it stalls (``fleet_patience`` iterations per route without a
    removal, an attempt at most ``fleet_patience_cap`` iterations and ``fleet_attempt_share`` of
    the time, see :func:`_eliminate_routes`; at most ``fleet_share`` of the time), then to
    shortening the routes of the smallest fleet found. With ``iteration_limit`` the shares are
    of the time limit or of the iterations, whichever runs out first. The reported distance is
    recomputed in double precision and the plan checked again (``feasible``).
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
    neighbours = compute_neighbours(data, NeighbourhoodParams(num_neighbours=NEIGHBOURS))
    deadline = started + time_limit_s
    budget = Budget(started, time_limit_s, deadline, on_progress)
    effort = _Effort(started, time_limit_s, iteration_limit)
    lower = math.ceil(int(demand.sum()) / max(capacity, 1))

    with warnings.catch_warnings():
        # Route elimination drives penalties to their bound on purpose.
        warnings.simplefilter("ignore", PenaltyBoundWarning)
        # 1. A first plan, the fixed vehicle cost already pushing towards few routes.
        first_end = effort.share() + first_share
        best, iterations = search(data, neighbours, effort.until(first_end), seed)
        # 2. Route elimination, until it stalls.
        fleet_started = time.perf_counter()
        fleet_iterations = 0
        if best.is_feasible():
            data, best, fleet_iterations = _eliminate_routes(
                data,
                neighbours,
                best,
                effort,
                effort.share() + fleet_share,
                seed,
                lower,
                fleet_patience,
                fleet_patience_cap,
                fleet_attempt_share,
            )
        fleet_seconds = time.perf_counter() - fleet_started
        # 3. Shorten the routes of the smallest fleet found, with all the time left.
        spent_up = effort.until(1.0)

        def final(cost: int) -> bool:
            return budget(cost) | spent_up(cost)  # both: the budget reports progress

        best, last = search(
            data,
            neighbours,
            final,
            seed,
            best if best.is_feasible() else None,
            params=IteratedLocalSearchParams(history_length=DISTANCE_HISTORY),
        )
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
        iterations=iterations + fleet_iterations + last,
        fleet_iterations=fleet_iterations,
        fleet_seconds=fleet_seconds,
    )


def solve_read_instance(inst: dict, **options) -> VrptwResult:
    """:func:`solve_vrptw_instance` on an instance as ``vrplib.read_instance(path,
    instance_format="solomon")`` returns it; ``options`` are that function's keywords."""
    return solve_vrptw_instance(
        inst["node_coord"],
        inst["demand"],
        int(inst["capacity"]),
        int(inst["vehicles"]),
        inst["time_window"],
        inst["service_time"],
        **options,
    )
