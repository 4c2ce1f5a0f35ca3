"""Route planning for the 科普大篷车 science caravans, on PyVRP 0.14.

Pure computation: no database, no tornado. ``server.domain.planning`` turns stored caravans,
duty days and school requests into a :class:`PlanProblem` and runs :func:`solve_plan` in a
process pool (arguments and results are msgspec Structs, so they pickle and serialise).

The model
---------
* Time is absolute inside the solver: day ``d`` at ``s`` seconds-of-day is ``d * DAY_STRIDE_S +
  s``. The stride is two days, so no route of one day can reach into another even when duty
  windows run to midnight. Results are given back as seconds-of-day of the route's day.
* One PyVRP vehicle per caravan-day: it starts and ends at its depot, may be out between
  ``duty_start_s`` and ``duty_end_s`` and for at most ``max_duty_s`` (PyVRP's
  ``shift_duration``). Caravan-days that are interchangeable (same day, depot, duty and
  capacity, and no pins) share one PyVRP vehicle type; caravan ids are handed out to its routes
  afterwards.
* One optional PyVRP client per (request, day, opening window) that a single visit could
  actually make. The copies of one request form a mutually exclusive client group, so a request
  is visited at most once; a copy's time window lies inside its day, so only that day's caravans
  can serve it. A show must fit inside the opening hours: its start lies in
  ``[open_s, close_s - service_s]``.
* The prize of every copy is ``priority * prize_per_priority_m`` (metres, the unit of the
  objective), far above any detour, so everything that fits is planned and, when not everything
  fits, the requests with the smallest total priority are dropped first.
* Pins: a pinned request gets only copies on its pinned day (its allowed days are overridden by
  the dispatcher's choice; its opening hours still hold), each at a location of its own, with a
  prize ``PIN_PRIZE_FACTOR`` times the largest other prize, which outweighs everything else.
  These pin locations can be reached only through the routing profile of the pinned
  caravan-day; every other vehicle type sees them as forbidden edges (``FORBIDDEN`` distance
  and duration, longer than a day, so never feasible). Pinned caravan-days of
  different days share profiles, so there are at most 1 + (most pinned caravans on one day)
  profiles. A pin that cannot be met (caravan-day unknown, or the visit alone cannot fit that
  duty day, or it conflicts with other pins) is reported as ``pin_infeasible``, never moved.
* Travel: great-circle distance (``server.geo.distance_matrix_m``) times ``road_factor``,
  integer metres; durations are those metres at ``speed_kmh``, integer seconds.

The search is PyVRP's iterated local search with a neighbourhood of our own that knows days
and alternatives (see :func:`_day_neighbours`), started from an empty plan, and a stopping
criterion that also reports progress: ``on_progress(fraction_of_time_limit, best_cost)``.

:func:`solve_vrptw_instance` runs Solomon-style VRPTW instances (one depot, identical vehicles,
Euclidean distances) through the same model assembly and search, for the benchmark.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import numpy as np
import pyvrp
from pyvrp import (
    Activity,
    ActivityType,
    ClientGroup,
    CostEvaluator,
    IteratedLocalSearch,
    IteratedLocalSearchParams,
    PenaltyManager,
    PenaltyParams,
    ProblemData,
    RandomNumberGenerator,
    Solution,
)
from pyvrp.exceptions import PenaltyBoundWarning
from pyvrp.search import (
    OPERATORS,
    LocalSearch,
    NeighbourhoodParams,
    PerturbationManager,
    PerturbationParams,
    compute_neighbours,
)

from server.geo import distance_matrix_m

__all__ = [
    "DAY_S",
    "DAY_STRIDE_S",
    "PIN_PRIZE_FACTOR",
    "REASON_CAPACITY",
    "REASON_EXCLUDED",
    "REASON_NO_ALLOWED_DAY",
    "REASON_PIN_INFEASIBLE",
    "REASON_UNREACHABLE",
    "CaravanDay",
    "CaravanRoute",
    "Depot",
    "Pin",
    "PlanProblem",
    "PlanResult",
    "ProgressToQueue",
    "Request",
    "Stop",
    "Unassigned",
    "VrptwResult",
    "solve_plan",
    "solve_vrptw_instance",
    "travel_matrices",
]

DAY_S: Final = 86_400
DAY_STRIDE_S: Final = 2 * DAY_S
"""Distance in solver time between the starts of consecutive days."""

PIN_PRIZE_FACTOR: Final = 1000
"""A pinned visit's prize is this many times the largest prize of an unpinned request."""

FORBIDDEN: Final = 10 * DAY_S
"""Distance (m) and duration (s) of edges that a vehicle type must never use: longer than any
duty day, so a route using one always has time warp."""

_MAX_PENALTY: Final = 1e8
"""Upper bound of the time-warp and load penalties (per second, per show) in the planner: high
enough to outweigh pin prizes, low enough that penalised costs stay far from int64 limits."""

REASON_EXCLUDED: Final = "excluded"
REASON_NO_ALLOWED_DAY: Final = "no_allowed_day"
REASON_UNREACHABLE: Final = "unreachable_in_duty_day"
REASON_CAPACITY: Final = "capacity"
REASON_PIN_INFEASIBLE: Final = "pin_infeasible"

_SCHOOL_HOURS: Final = ((8 * 3600, 17 * 3600),)
_SAME_DAY_NEIGHBOURS: Final = 25
_OTHER_DAY_NEIGHBOURS: Final = 25
_WEIGHT_WAIT: Final = 0.2
_WEIGHT_TIME_WARP: Final = 1.0
_PROGRESS_INTERVAL_S: Final = 0.5
_PATIENCE: Final = 50_000
"""Iterations without a better plan after which the planner stops before its time limit."""
_INT_MAX: Final = int(np.iinfo(np.int64).max)

ProgressCallback = Callable[[float, int | None], None]
Window = tuple[int, int]


# --------------------------------------------------------------------------------------------
# Input and output types
# --------------------------------------------------------------------------------------------


class Depot(msgspec.Struct, frozen=True, kw_only=True):
    """Where caravans start and end their duty day (WGS-84)."""

    depot_id: str
    lng: float
    lat: float


class CaravanDay(msgspec.Struct, frozen=True, kw_only=True):
    """One caravan on duty on one day: one vehicle for the solver.

    ``day`` is the index of the day in the planning horizon (the caller maps dates to indices);
    duty times are seconds of that day. ``max_duty_s`` defaults to the whole duty window;
    ``max_shows`` (shows per day) is unlimited when None.
    """

    caravan_id: str
    day: int
    depot_id: str
    duty_start_s: int
    duty_end_s: int
    max_duty_s: int | None = None
    max_shows: int | None = None


class Request(msgspec.Struct, frozen=True, kw_only=True):
    """A site (school) asking for one caravan show on one of ``allowed_days``.

    ``open_hours`` are the site's opening windows (seconds of day) on every allowed day unless
    ``open_hours_by_day`` gives that day's own windows (an empty tuple: closed). The show of
    ``service_s`` seconds must fit inside one window. ``priority`` (>= 1) is the request's weight
    when not everything fits.
    """

    request_id: str
    site_id: str
    lng: float
    lat: float
    allowed_days: tuple[int, ...]
    service_s: int
    priority: int = 1
    open_hours: tuple[Window, ...] = _SCHOOL_HOURS
    open_hours_by_day: dict[int, tuple[Window, ...]] = {}

    def windows_on(self, day: int) -> tuple[Window, ...]:
        return self.open_hours_by_day.get(day, self.open_hours)


class Pin(msgspec.Struct, frozen=True, kw_only=True):
    """The dispatcher's decision: this request is visited by this caravan on this day."""

    request_id: str
    caravan_id: str
    day: int


class PlanProblem(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one plan needs. ``excluded`` requests are left out (reported as such, and
    an exclusion beats a pin of the same request); ``pins`` hold what the dispatcher fixed;
    ``time_limit_s`` bounds the wall-clock time of :func:`solve_plan`. Prizes and costs are in
    metres."""

    depots: tuple[Depot, ...]
    caravan_days: tuple[CaravanDay, ...]
    requests: tuple[Request, ...]
    pins: tuple[Pin, ...] = ()
    excluded: tuple[str, ...] = ()
    road_factor: float = 1.3
    speed_kmh: float = 40.0
    time_limit_s: float = 30.0
    seed: int = 0
    prize_per_priority_m: int = 1_000_000
    caravan_day_cost_m: int = 0
    """Fixed cost (in metres) of sending a caravan out on a day; 0 plans by distance alone."""


class Stop(msgspec.Struct, frozen=True, kw_only=True):
    """One show; times are seconds of the route's day."""

    request_id: str
    site_id: str
    arrive_s: int
    start_s: int
    depart_s: int


class CaravanRoute(msgspec.Struct, frozen=True, kw_only=True):
    caravan_id: str
    day: int
    depot_id: str
    leave_s: int
    return_s: int
    stops: tuple[Stop, ...]
    distance_m: int
    duration_s: int


class Unassigned(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    reason: str
    detail: str = ""


class PlanResult(msgspec.Struct, frozen=True, kw_only=True):
    routes: tuple[CaravanRoute, ...]
    unassigned: tuple[Unassigned, ...]
    distance_m: int
    cost: int
    """Solver objective: distance (plus caravan-day costs) plus the prizes left uncollected."""
    feasible: bool
    runtime_s: float
    iterations: int = 0
    repaired_visits: int = 0
    """Visits dropped after the search because the best solution was not feasible (normally 0)."""


class ProgressToQueue:
    """Picklable ``on_progress`` that puts ``(fraction, best_cost)`` on a queue.

    Give it a ``multiprocessing.Manager().Queue()`` (or any object with ``put_nowait``) to read
    the progress of a plan that runs in a process pool.
    """

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def __call__(self, fraction: float, best_cost: int | None) -> None:
        self.queue.put_nowait((fraction, best_cost))


# --------------------------------------------------------------------------------------------
# Travel
# --------------------------------------------------------------------------------------------


def travel_matrices(
    lngs: Sequence[float] | np.ndarray,
    lats: Sequence[float] | np.ndarray,
    road_factor: float = 1.3,
    speed_kmh: float = 40.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Road distance (int64 metres) and driving time (int64 seconds) between all points."""
    if road_factor <= 0 or speed_kmh <= 0:
        raise ValueError("road_factor and speed_kmh must be positive")
    metres = distance_matrix_m(lngs, lats) * road_factor
    dist = np.rint(metres).astype(np.int64)
    dur = np.rint(metres / (speed_kmh / 3.6)).astype(np.int64)
    return dist, dur


# --------------------------------------------------------------------------------------------
# Model assembly shared by the planner and the Solomon path
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _ClientSpec:
    loc: int  # index into the assembled locations
    real: int  # index into the base matrix (a pin location's own site)
    tw_early: int
    tw_late: int
    service: int
    prize: int
    required: bool
    demand: int = 0
    request: int = -1  # index of the request (or Solomon customer)
    day: int = 0
    pin_vtype: int = -1  # vehicle type a pinned copy belongs to
    group: int | None = None


@dataclass(slots=True)
class _VehicleTypeSpec:
    num: int
    depot: int
    tw_early: int
    tw_late: int
    shift_duration: int
    capacity: int | None
    fixed_cost: int
    day: int = 0
    profile: int = 0
    members: list[CaravanDay] = field(default_factory=list)


@dataclass(slots=True)
class _Assembly:
    data: ProblemData
    clients: list[_ClientSpec]
    vtypes: list[_VehicleTypeSpec]
    dur: np.ndarray  # base duration matrix over real points (no forbidden edges)


def _assemble(
    points: Sequence[tuple[float, float]],
    dist: np.ndarray,
    dur: np.ndarray,
    num_depots: int,
    clients: list[_ClientSpec],
    groups: list[list[int]],
    vtypes: list[_VehicleTypeSpec],
    pin_locs: Sequence[tuple[int, int]] = (),
    num_profiles: int = 1,
) -> _Assembly:
    """Builds PyVRP ProblemData.

    ``points`` are the real points (depots first) that ``dist``/``dur`` describe;
    ``pin_locs`` are extra locations as (real point, profile that may use it), appended after
    the real points. Profile 0 and every other profile see those locations as forbidden.
    """
    n_real = len(points)
    real_of = np.concatenate(
        [np.arange(n_real), np.asarray([r for r, _ in pin_locs], dtype=np.int64)]
    ).astype(np.int64)
    locations = [pyvrp.Location(x=float(x), y=float(y)) for x, y in points]
    locations += [pyvrp.Location(x=locations[r].x, y=locations[r].y) for r, _ in pin_locs]

    if pin_locs:
        open_dist = dist[np.ix_(real_of, real_of)]
        open_dur = dur[np.ix_(real_of, real_of)]
        pin_profile = np.asarray([p for _, p in pin_locs])
        dist_mats, dur_mats = [], []
        diag = np.arange(len(real_of))
        for profile in range(num_profiles):
            closed = n_real + np.flatnonzero(pin_profile != profile)
            d, t = open_dist.copy(), open_dur.copy()
            for m in (d, t):
                m[closed, :] = FORBIDDEN
                m[:, closed] = FORBIDDEN
                m[diag, diag] = 0
            dist_mats.append(d)
            dur_mats.append(t)
    else:
        dist_mats = [np.ascontiguousarray(dist, dtype=np.int64)] * num_profiles
        dur_mats = [np.ascontiguousarray(dur, dtype=np.int64)] * num_profiles

    has_load = any(vt.capacity is not None for vt in vtypes)
    load = (lambda q: [q]) if has_load else (lambda q: [])
    pyvrp_clients = [
        pyvrp.Client(
            location=c.loc,
            delivery=load(c.demand),
            pickup=load(0),
            service_duration=c.service,
            tw_early=c.tw_early,
            tw_late=c.tw_late,
            prize=c.prize,
            required=c.required,
            group=c.group,
        )
        for c in clients
    ]
    big_capacity = 10**9
    pyvrp_vtypes = [
        pyvrp.VehicleType(
            num_available=vt.num,
            capacity=load(big_capacity if vt.capacity is None else vt.capacity),
            start_depot=vt.depot,
            end_depot=vt.depot,
            fixed_cost=vt.fixed_cost,
            tw_early=vt.tw_early,
            tw_late=vt.tw_late,
            shift_duration=vt.shift_duration,
            profile=vt.profile,
        )
        for vt in vtypes
    ]
    data = ProblemData(
        locations=locations,
        clients=pyvrp_clients,
        depots=[pyvrp.Depot(location=i) for i in range(num_depots)],
        vehicle_types=pyvrp_vtypes,
        distance_matrices=dist_mats,
        duration_matrices=dur_mats,
        groups=[ClientGroup(members, required=False) for members in groups],
    )
    return _Assembly(data=data, clients=clients, vtypes=vtypes, dur=dur)


def _day_neighbours(
    asm: _Assembly, same_day: int = _SAME_DAY_NEIGHBOURS, other_days: int = _OTHER_DAY_NEIGHBOURS
) -> dict[Activity, list[Activity]]:
    """Granular neighbourhood aware of days and alternatives.

    Proximity is PyVRP's (travel time plus weighted minimal waiting and time warp, taken in the
    better direction). A copy of a request on day d gets as neighbours the ``same_day`` nearest
    clients of day d, which its route could hold, and the ``other_days`` nearest clients of the
    request's other days, measured from the request's copy on that day: those let
    ``RelocateAlternative`` move a visit to another day. Copies of one request are never
    neighbours, nor are pinned copies of different caravan-days.
    """
    cs = asm.clients
    n = len(cs)
    day = np.asarray([c.day for c in cs], dtype=np.int64)
    real = np.asarray([c.real for c in cs], dtype=np.int64)
    early = np.asarray([c.tw_early for c in cs], dtype=np.float64)
    late = np.asarray([c.tw_late for c in cs], dtype=np.float64)
    service = np.asarray([c.service for c in cs], dtype=np.float64)
    request = np.asarray([c.request for c in cs], dtype=np.int64)
    pin = np.asarray([c.pin_vtype for c in cs], dtype=np.int64)
    dur = asm.dur.astype(np.float64)

    def proximity(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        t_ij = dur[np.ix_(real[rows], real[cols])]
        t_ji = dur[np.ix_(real[cols], real[rows])].T
        e_i, l_i, s_i = early[rows][:, None], late[rows][:, None], service[rows][:, None]
        e_j, l_j, s_j = early[cols][None, :], late[cols][None, :], service[cols][None, :]
        p_ij = (
            t_ij
            + _WEIGHT_WAIT * np.maximum(e_j - l_i - s_i - t_ij, 0)
            + _WEIGHT_TIME_WARP * np.maximum(e_i + s_i + t_ij - l_j, 0)
        )
        p_ji = (
            t_ji
            + _WEIGHT_WAIT * np.maximum(e_i - l_j - s_j - t_ji, 0)
            + _WEIGHT_TIME_WARP * np.maximum(e_j + s_j + t_ji - l_i, 0)
        )
        prox = np.minimum(p_ij, p_ji)
        prox[day[rows][:, None] != day[cols][None, :]] = np.inf
        pr, pc = pin[rows][:, None], pin[cols][None, :]
        prox[(pr >= 0) & (pc >= 0) & (pr != pc)] = np.inf
        return prox

    def nearest(scores: np.ndarray, cols: np.ndarray, k: int) -> list[int]:
        k = min(k, int(np.isfinite(scores).sum()))
        if k <= 0:
            return []
        part = np.argpartition(scores, k - 1)[:k]
        return cols[part[np.argsort(scores[part], kind="stable")]].tolist()

    acts = [Activity(ActivityType.CLIENT, i) for i in range(n)]
    result: dict[Activity, list[Activity]] = {}
    order = np.argsort(request, kind="stable")
    bounds = np.flatnonzero(np.diff(request[order])) + 1
    for copies in np.split(order, bounds) if n else []:
        cols = np.flatnonzero(np.isin(day, day[copies]) & (request != request[copies[0]]))
        prox = proximity(copies, cols)
        via_alternative = prox.min(axis=0)  # from the request's copy on each candidate's day
        for row, i in enumerate(copies):
            same = nearest(prox[row], cols, same_day)
            other_scores = np.where(day[cols] == day[i], np.inf, via_alternative)
            if pin[i] >= 0:
                other_scores = np.full_like(other_scores, np.inf)
            other = nearest(other_scores, cols, other_days)
            result[acts[i]] = [acts[j] for j in same + other]
    return result


# --------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------


class _Budget:
    """Stopping criterion on wall-clock time that also reports progress.

    With ``patience`` it also stops once that many iterations in a row found no better
    feasible solution: small plans then return long before their time limit.
    """

    def __init__(
        self,
        started: float,
        time_limit_s: float,
        stop_at: float,
        on_progress: ProgressCallback | None,
        cost_offset: int = 0,
        patience: int | None = None,
    ) -> None:
        self.cost_offset = cost_offset
        self.started = started
        self.time_limit_s = max(time_limit_s, 1e-9)
        self.stop_at = stop_at
        self.on_progress = on_progress
        self.next_report = 0.0
        self.patience = patience
        self.best = _INT_MAX
        self.stale = 0

    def report(self, best_cost: int | None, now: float | None = None) -> None:
        if self.on_progress is None:
            return
        now = time.perf_counter() if now is None else now
        fraction = min(max((now - self.started) / self.time_limit_s, 0.0), 1.0)
        try:
            self.on_progress(fraction, best_cost)
        except Exception:  # a dead progress sink must not kill the plan
            self.on_progress = None

    def __call__(self, best_cost: int) -> bool:
        now = time.perf_counter()
        if now >= self.next_report:
            self.next_report = now + _PROGRESS_INTERVAL_S
            self.report(best_cost - self.cost_offset if best_cost < _INT_MAX else None, now)
        if best_cost < self.best:
            self.best, self.stale = best_cost, 0
        else:
            self.stale += 1
        stale = self.patience is not None and self.best < _INT_MAX and self.stale > self.patience
        return stale or now >= self.stop_at


def _search(
    data: ProblemData,
    neighbours: dict[Activity, list[Activity]],
    stop: Callable[[int], bool],
    seed: int,
    initial: Solution | None = None,
    max_penalty: float | None = None,
) -> tuple[Solution, int]:
    """PyVRP's iterated local search with our own neighbourhood; returns (best, iterations).

    Penalties start at PyVRP's default midpoint; ``max_penalty`` lets them rise further (per
    unit of time warp or excess load), needed when prizes are large (pins).
    """
    rng = RandomNumberGenerator(seed=seed)
    ls = LocalSearch(data, rng, neighbours, PerturbationManager(PerturbationParams()))
    for op in OPERATORS:
        if op.supports(data):
            ls.add_operator(op(data))
    initial_penalties = PenaltyParams().midpoint_penalties(data)
    penalty_params = (
        PenaltyParams() if max_penalty is None else PenaltyParams(max_penalty=max_penalty)
    )
    pm = PenaltyManager(initial_penalties, penalty_params)
    if initial is None:
        initial = ls(Solution.make_random(data, rng), pm.max_cost_evaluator(), exhaustive=True)
    algo = IteratedLocalSearch(data, pm, ls, initial, IteratedLocalSearchParams())
    result = algo.run(stop, collect_stats=False, display=False)
    return result.best, result.num_iterations


def _objective(sol: Solution) -> int:
    """The objective without penalties: distance, fixed vehicle costs, uncollected prizes."""
    return CostEvaluator([0] * len(sol.excess_load()), 0, 0).cost(sol)


def _repair(data: ProblemData, sol: Solution) -> tuple[Solution, list[int]]:
    """Drops visits from infeasible routes until every route is feasible.

    Only needed when the search ended without a feasible best solution; the visits dropped
    first are those whose removal helps most, the cheapest prize breaking ties.
    """
    routes: list[pyvrp.Route] = []
    dropped: list[int] = []
    for route in sol.routes():
        vt = route.vehicle_type()
        visits = [a.idx for a in route.schedule() if a.is_client()]
        current = route
        while visits and not current.is_feasible():
            best: tuple[tuple[int, int], int, pyvrp.Route] | None = None
            for pos, client in enumerate(visits):
                trial = pyvrp.Route(data, visits[:pos] + visits[pos + 1 :], vt)
                score = (trial.time_warp() + sum(trial.excess_load()), data.client(client).prize)
                if best is None or score < best[0]:
                    best = (score, pos, trial)
            assert best is not None
            _, pos, current = best
            dropped.append(visits.pop(pos))
        if visits:
            routes.append(current)
    return Solution(data, routes), dropped


# --------------------------------------------------------------------------------------------
# The caravan planner
# --------------------------------------------------------------------------------------------


def _validate(problem: PlanProblem) -> None:
    if problem.road_factor <= 0 or problem.speed_kmh <= 0:
        raise ValueError("road_factor and speed_kmh must be positive")
    if problem.time_limit_s <= 0:
        raise ValueError("time_limit_s must be positive")
    depot_ids = [d.depot_id for d in problem.depots]
    if len(set(depot_ids)) != len(depot_ids):
        raise ValueError("duplicate depot_id")
    seen_vehicles: set[tuple[str, int]] = set()
    for v in problem.caravan_days:
        if v.depot_id not in depot_ids:
            raise ValueError(f"caravan {v.caravan_id} day {v.day}: unknown depot {v.depot_id}")
        if (v.caravan_id, v.day) in seen_vehicles:
            raise ValueError(f"caravan {v.caravan_id} is on duty twice on day {v.day}")
        seen_vehicles.add((v.caravan_id, v.day))
        if v.day < 0 or not 0 <= v.duty_start_s <= v.duty_end_s <= DAY_S:
            raise ValueError(f"caravan {v.caravan_id} day {v.day}: bad duty window")
        if v.max_duty_s is not None and v.max_duty_s < 0:
            raise ValueError(f"caravan {v.caravan_id} day {v.day}: negative max_duty_s")
        if v.max_shows is not None and v.max_shows < 0:
            raise ValueError(f"caravan {v.caravan_id} day {v.day}: negative max_shows")
    request_ids = [r.request_id for r in problem.requests]
    if len(set(request_ids)) != len(request_ids):
        raise ValueError("duplicate request_id")
    for r in problem.requests:
        if r.service_s < 0 or r.priority < 1:
            raise ValueError(f"request {r.request_id}: service_s >= 0 and priority >= 1 needed")
        windows = [*r.open_hours, *(w for ws in r.open_hours_by_day.values() for w in ws)]
        if any(not 0 <= a <= b <= DAY_S for a, b in windows):
            raise ValueError(f"request {r.request_id}: bad opening window")
        if any(d < 0 for d in r.allowed_days):
            raise ValueError(f"request {r.request_id}: negative day")
    pinned = [p.request_id for p in problem.pins]
    if len(set(pinned)) != len(pinned):
        raise ValueError("a request is pinned twice")
    if unknown := set(pinned) - set(request_ids):
        raise ValueError(f"pins for unknown requests: {sorted(unknown)}")


def _service_window(
    window: Window, service: int, v: CaravanDay, to_site: int, back: int
) -> Window | None:
    """Window (seconds of day) in which a lone show for ``v`` could start, or None."""
    open_s, close_s = window
    max_duty = v.duty_end_s - v.duty_start_s if v.max_duty_s is None else v.max_duty_s
    if v.max_shows == 0 or to_site + service + back > max_duty:
        return None
    earliest = max(open_s, v.duty_start_s + to_site)
    latest = min(close_s - service, v.duty_end_s - back - service)
    return (earliest, latest) if earliest <= latest else None


class _PlanModel:
    """The PyVRP model of one PlanProblem, with the maps needed to read a solution back."""

    def __init__(self, problem: PlanProblem) -> None:
        _validate(problem)
        self.problem = problem
        self.unassigned: dict[str, Unassigned] = {}

        excluded = set(problem.excluded)
        requests = list(problem.requests)
        for r in requests:
            if r.request_id in excluded:
                self.unassigned[r.request_id] = Unassigned(
                    request_id=r.request_id, reason=REASON_EXCLUDED, detail="removed by dispatcher"
                )
        active = [r for r in requests if r.request_id not in excluded]
        self.requests = active

        # Real points: depots, then one per site.
        depot_index = {d.depot_id: i for i, d in enumerate(problem.depots)}
        points = [(d.lng, d.lat) for d in problem.depots]
        site_point: dict[tuple[str, float, float], int] = {}
        self.request_point: list[int] = []
        for r in active:
            key = (r.site_id, r.lng, r.lat)
            if key not in site_point:
                site_point[key] = len(points)
                points.append((r.lng, r.lat))
            self.request_point.append(site_point[key])
        lngs = np.asarray([p[0] for p in points])
        lats = np.asarray([p[1] for p in points])
        self.dist, self.dur = travel_matrices(lngs, lats, problem.road_factor, problem.speed_kmh)

        # Vehicle types: pinned caravan-days alone, the others merged when interchangeable.
        pins = {p.request_id: p for p in problem.pins if p.request_id not in excluded}
        vehicle_of = {(v.caravan_id, v.day): v for v in problem.caravan_days}
        pinned_vehicles = {
            (p.caravan_id, p.day) for p in pins.values() if (p.caravan_id, p.day) in vehicle_of
        }
        self.vtypes: list[_VehicleTypeSpec] = []
        merged: dict[tuple, int] = {}
        vtype_of_vehicle: dict[tuple[str, int], int] = {}
        pinned_on_day: dict[int, int] = defaultdict(int)
        for v in sorted(problem.caravan_days, key=lambda v: (v.day, v.depot_id, v.caravan_id)):
            max_duty = v.duty_end_s - v.duty_start_s if v.max_duty_s is None else v.max_duty_s
            key = (v.day, v.depot_id, v.duty_start_s, v.duty_end_s, max_duty, v.max_shows)
            is_pinned = (v.caravan_id, v.day) in pinned_vehicles
            if not is_pinned and key in merged:
                vt = self.vtypes[merged[key]]
                vt.num += 1
                vt.members.append(v)
                vtype_of_vehicle[(v.caravan_id, v.day)] = merged[key]
                continue
            profile = 0
            if is_pinned:
                pinned_on_day[v.day] += 1
                profile = pinned_on_day[v.day]
            base = v.day * DAY_STRIDE_S
            spec = _VehicleTypeSpec(
                num=1,
                depot=depot_index[v.depot_id],
                tw_early=base + v.duty_start_s,
                tw_late=base + v.duty_end_s,
                shift_duration=max_duty,
                capacity=v.max_shows,
                fixed_cost=problem.caravan_day_cost_m,
                day=v.day,
                profile=profile,
                members=[v],
            )
            vtype_of_vehicle[(v.caravan_id, v.day)] = len(self.vtypes)
            if not is_pinned:
                merged[key] = len(self.vtypes)
            self.vtypes.append(spec)
        self.num_profiles = 1 + max(pinned_on_day.values(), default=0)
        vtypes_on_day: dict[int, list[int]] = defaultdict(list)
        for i, vt in enumerate(self.vtypes):
            vtypes_on_day[vt.day].append(i)

        # Clients: one per (request, day, window) that a lone visit could make.
        self.clients: list[_ClientSpec] = []
        self.cost_offset = 0
        groups: list[list[int]] = []
        pin_locs: list[tuple[int, int]] = []
        self.pin_of_request: dict[int, int] = {}
        self.reachable: list[bool] = []
        top_priority = max((r.priority for r in active), default=1)
        pin_prize = PIN_PRIZE_FACTOR * top_priority * problem.prize_per_priority_m
        for ri, r in enumerate(active):
            site = self.request_point[ri]
            copies: list[_ClientSpec] = []
            pin = pins.get(r.request_id)
            if pin is not None:
                vi = vtype_of_vehicle.get((pin.caravan_id, pin.day))
                if vi is None:
                    self._drop(
                        r, REASON_PIN_INFEASIBLE, "the pinned caravan is not on duty that day"
                    )
                    self.reachable.append(False)
                    continue
                vt = self.vtypes[vi]
                loc = -1  # filled below
                for window in r.windows_on(pin.day):
                    sw = self._lone_window(r, site, window, vt)
                    if sw is not None:
                        if loc < 0:
                            loc = len(points) + len(pin_locs)
                            pin_locs.append((site, vt.profile))
                        copies.append(self._copy(ri, r, loc, site, pin.day, sw, pin_prize, vi))
                if not copies:
                    self._drop(
                        r, REASON_PIN_INFEASIBLE, "the visit alone does not fit the pinned duty day"
                    )
                    self.reachable.append(False)
                    continue
                self.pin_of_request[ri] = vi
            else:
                prize = r.priority * problem.prize_per_priority_m
                days_with_vehicles = [d for d in sorted(set(r.allowed_days)) if vtypes_on_day[d]]
                if not days_with_vehicles:
                    self._drop(r, REASON_NO_ALLOWED_DAY, "no caravan on duty on any allowed day")
                    self.reachable.append(False)
                    continue
                for d in days_with_vehicles:
                    for window in r.windows_on(d):
                        spans = [
                            sw
                            for vi in vtypes_on_day[d]
                            if (sw := self._lone_window(r, site, window, self.vtypes[vi]))
                        ]
                        if spans:  # the union of what the day's caravans could make
                            span = (min(a for a, _ in spans), max(b for _, b in spans))
                            copies.append(self._copy(ri, r, site, site, d, span, prize, -1))
                if not copies:
                    self._drop(
                        r,
                        REASON_UNREACHABLE,
                        "depot, site and show do not fit a duty day and the opening hours",
                    )
                    self.reachable.append(False)
                    continue
            self.reachable.append(True)
            first = len(self.clients)
            if len(copies) > 1:
                for c in copies:
                    c.group = len(groups)
                groups.append(list(range(first, first + len(copies))))
                # PyVRP counts the prize of every copy left out; all but one always are.
                self.cost_offset += (len(copies) - 1) * copies[0].prize
            self.clients.extend(copies)

        self.asm: _Assembly | None = None
        if not self.clients:  # nothing to route (also when no caravan is on duty)
            return
        self.asm = _assemble(
            points,
            self.dist,
            self.dur,
            len(problem.depots),
            self.clients,
            groups,
            self.vtypes,
            pin_locs,
            self.num_profiles,
        )

    def _drop(self, r: Request, reason: str, detail: str) -> None:
        self.unassigned[r.request_id] = Unassigned(
            request_id=r.request_id, reason=reason, detail=detail
        )

    def _lone_window(
        self, r: Request, site: int, window: Window, vt: _VehicleTypeSpec
    ) -> Window | None:
        depot = vt.depot
        return _service_window(
            window,
            r.service_s,
            vt.members[0],
            int(self.dur[depot, site]),
            int(self.dur[site, depot]),
        )

    def _copy(
        self, ri: int, r: Request, loc: int, site: int, day: int, span: Window, prize: int, vi: int
    ) -> _ClientSpec:
        base = day * DAY_STRIDE_S
        return _ClientSpec(
            loc=loc,
            real=site,
            tw_early=base + span[0],
            tw_late=base + span[1],
            service=r.service_s,
            prize=prize,
            required=False,
            demand=1,
            request=ri,
            day=day,
            pin_vtype=vi,
        )

    def read(
        self, sol: Solution | None, started: float, iterations: int, repaired: list[int]
    ) -> PlanResult:
        visited: set[int] = set()
        routes_by_type: dict[int, list[pyvrp.Route]] = defaultdict(list)
        for route in sol.routes() if sol is not None else ():
            routes_by_type[route.vehicle_type()].append(route)
        out: list[CaravanRoute] = []
        for vi, routes in routes_by_type.items():
            vt = self.vtypes[vi]
            members = sorted(vt.members, key=lambda v: v.caravan_id)
            routes.sort(key=lambda rt: (rt.start_time(), rt.distance()))
            base = vt.day * DAY_STRIDE_S
            for vehicle, route in zip(members, routes, strict=False):
                stops = []
                for act in route.schedule():
                    if not act.is_client():
                        continue
                    spec = self.clients[act.idx]
                    req = self.requests[spec.request]
                    visited.add(spec.request)
                    stops.append(
                        Stop(
                            request_id=req.request_id,
                            site_id=req.site_id,
                            arrive_s=act.start_time - act.wait_duration - base,
                            start_s=act.start_time - base,
                            depart_s=act.end_time - base,
                        )
                    )
                out.append(
                    CaravanRoute(
                        caravan_id=vehicle.caravan_id,
                        day=vehicle.day,
                        depot_id=vehicle.depot_id,
                        leave_s=route.start_time() - base,
                        return_s=route.end_time() - base,
                        stops=tuple(stops),
                        distance_m=route.distance(),
                        duration_s=route.duration(),
                    )
                )
        out.sort(key=lambda rt: (rt.day, rt.caravan_id))

        dropped_pins = {self.clients[c].request for c in repaired if self.clients[c].pin_vtype >= 0}
        unassigned = dict(self.unassigned)
        for ri, r in enumerate(self.requests):
            if not self.reachable[ri] or ri in visited:
                continue
            if ri in self.pin_of_request or ri in dropped_pins:
                self._drop(r, REASON_PIN_INFEASIBLE, "conflicts with other pins of that duty day")
            else:
                self._drop(r, REASON_CAPACITY, "fits alone, but not into the plan")
            unassigned[r.request_id] = self.unassigned[r.request_id]
        order = {r.request_id: i for i, r in enumerate(self.problem.requests)}
        return PlanResult(
            routes=tuple(out),
            unassigned=tuple(sorted(unassigned.values(), key=lambda u: order[u.request_id])),
            distance_m=sum(rt.distance_m for rt in out),
            cost=0 if sol is None else _objective(sol) - self.cost_offset,
            feasible=sol is None or sol.is_feasible(),
            runtime_s=time.perf_counter() - started,
            iterations=iterations,
            repaired_visits=len(repaired),
        )


def solve_plan(problem: PlanProblem, on_progress: ProgressCallback | None = None) -> PlanResult:
    """Plans the caravan tours of ``problem`` within ``problem.time_limit_s`` (wall clock); it
    returns earlier when the search has stalled (``_PATIENCE`` iterations without progress).

    A top-level function with picklable arguments, for ``ProcessPoolExecutor.submit``; to
    watch a plan from another process pass :class:`ProgressToQueue`. ``on_progress`` is called
    about twice a second with the fraction of the time limit used and the best cost so far
    (None while no feasible plan is known), and once more at the end with fraction 1.0.
    """
    started = time.perf_counter()
    model = _PlanModel(problem)
    # Leave a little of the limit for reading the solution back.
    reserve = min(0.05 * problem.time_limit_s, 0.5)
    stop_at = started + problem.time_limit_s - reserve
    budget = _Budget(
        started, problem.time_limit_s, stop_at, on_progress, model.cost_offset, _PATIENCE
    )
    budget.report(None)
    sol: Solution | None = None
    iterations = 0
    repaired: list[int] = []
    if model.asm is not None:
        data = model.asm.data
        neighbours = _day_neighbours(model.asm)
        # An empty start: every client is optional and the search inserts what pays.
        sol, iterations = _search(
            data, neighbours, budget, problem.seed, Solution(data, []), _MAX_PENALTY
        )
        if not sol.is_feasible():
            sol, repaired = _repair(data, sol)
    result = model.read(sol, started, iterations, repaired)
    if budget.on_progress is not None:
        budget.on_progress(1.0, result.cost)
    return result


# --------------------------------------------------------------------------------------------
# Solomon VRPTW (benchmark path)
# --------------------------------------------------------------------------------------------


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
            return cost < _INT_MAX or time.perf_counter() >= deadline

        found, _ = _search(fewer, neighbours, stop, seed + attempt, None)
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
        _ClientSpec(
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
    vtype = _VehicleTypeSpec(
        num=num_vehicles,
        depot=0,
        tw_early=math.ceil(tw[0, 0] * scale),
        tw_late=math.floor(tw[0, 1] * scale),
        shift_duration=_INT_MAX,
        capacity=int(capacity),
        fixed_cost=vehicle_cost,
    )
    asm = _assemble([tuple(p) for p in coords], dist, dur, 1, clients, [], [vtype])
    data = asm.data
    neighbours = compute_neighbours(data, NeighbourhoodParams())
    deadline = started + time_limit_s
    budget = _Budget(started, time_limit_s, deadline, on_progress)
    span = deadline - time.perf_counter()

    with warnings.catch_warnings():
        # Route elimination drives penalties to their bound on purpose.
        warnings.simplefilter("ignore", PenaltyBoundWarning)
        # 1. A first plan, the fixed vehicle cost already pushing towards few routes.
        first_stop = _Budget(started, time_limit_s, time.perf_counter() + first_share * span, None)
        best, _ = _search(data, neighbours, first_stop, seed)
        # 2. Route elimination.
        if best.is_feasible():
            fleet_deadline = time.perf_counter() + fleet_share * span
            data, best = _eliminate_routes(
                data, neighbours, best, fleet_deadline, seed, demand, capacity
            )
        # 3. Shorten the routes of the smallest fleet found.
        best, _ = _search(data, neighbours, budget, seed, best if best.is_feasible() else None)
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
