"""The caravan planner: a :class:`~server.vrp.model.PlanProblem` as a PyVRP model, searched
and read back as a :class:`~server.vrp.model.PlanResult`.

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

Stays (a unit's days or weeks at one site) are placed first (:mod:`server.vrp.stays`); the
caravan-days they occupy are left out of the model above, which routes the day visits on the
caravan-days that remain.

The search is PyVRP's iterated local search with a neighbourhood of our own that knows days
and alternatives (see :func:`day_neighbours`), started from an empty plan, and a stopping
criterion that also reports progress: ``on_progress(fraction_of_time_limit, best_cost)``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Final

import msgspec
import numpy as np
import pyvrp
from pyvrp import IteratedLocalSearchParams, Solution

from server.vrp.assembly import Assembly, ClientSpec, VehicleTypeSpec, assemble, day_neighbours
from server.vrp.model import (
    DAY_S,
    DAY_STRIDE_S,
    PIN_PRIZE_FACTOR,
    REASON_CAPACITY,
    REASON_EXCLUDED,
    REASON_NO_ALLOWED_DAY,
    REASON_PIN_INFEASIBLE,
    REASON_UNREACHABLE,
    CaravanDay,
    CaravanRoute,
    PlanProblem,
    PlanResult,
    ProgressCallback,
    Request,
    Stop,
    Unassigned,
    Window,
    travel_matrices,
)
from server.vrp.search import DISTANCE_HISTORY, Budget, objective, repair, search
from server.vrp.stays import place_stays

_MAX_PENALTY: Final = 1e8
"""Upper bound of the time-warp and load penalties (per second, per show) in the planner: high
enough to outweigh pin prizes, low enough that penalised costs stay far from int64 limits."""

_PATIENCE: Final = 50_000
"""Iterations without a better plan after which the planner stops before its time limit."""


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
        self.vtypes: list[VehicleTypeSpec] = []
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
            spec = VehicleTypeSpec(
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
        self.clients: list[ClientSpec] = []
        self.cost_offset = 0
        groups: list[list[int]] = []
        pin_locs: list[tuple[int, int]] = []
        self.pin_of_request: dict[int, int] = {}
        self.reachable: list[bool] = []
        top_priority = max((r.priority for r in active), default=1)
        pin_prize = PIN_PRIZE_FACTOR * top_priority * problem.prize_per_priority_m
        for ri, r in enumerate(active):
            site = self.request_point[ri]
            copies: list[ClientSpec] = []
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

        self.asm: Assembly | None = None
        if not self.clients:  # nothing to route (also when no caravan is on duty)
            return
        self.asm = assemble(
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
        self, r: Request, site: int, window: Window, vt: VehicleTypeSpec
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
    ) -> ClientSpec:
        base = day * DAY_STRIDE_S
        return ClientSpec(
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
        self,
        sol: Solution | None,
        started: float,
        iterations: int,
        repaired: list[int],
        interrupted: bool = False,
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
            cost=0 if sol is None else objective(sol) - self.cost_offset,
            feasible=sol is None or sol.is_feasible(),
            runtime_s=time.perf_counter() - started,
            iterations=iterations,
            repaired_visits=len(repaired),
            interrupted=interrupted,
        )


def solve_plan(
    problem: PlanProblem,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PlanResult:
    """Plans the caravan tours of ``problem`` within ``problem.time_limit_s`` (wall clock); it
    returns earlier when the search has stalled (``_PATIENCE`` iterations without progress),
    or when ``should_stop`` (asked about twice a second) returns true.

    There is no fleet minimisation: the caravan-days on duty are the fleet and an unused one
    costs nothing (a ``caravan_day_cost_m`` is weighed by the search itself), so the whole
    budget goes to placing visits and shortening routes.

    A top-level function with picklable arguments, for ``ProcessPoolExecutor.submit``; to
    watch a plan from another process pass :class:`ProgressToQueue`. ``on_progress`` is called
    about twice a second with the fraction of the time limit used and the best cost so far
    (None while no feasible plan is known), and once more at the end with fraction 1.0.
    """
    started = time.perf_counter()
    stays = place_stays(problem, started + min(0.2 * problem.time_limit_s, 5.0))
    if stays.occupied:
        calendar = problem.calendar_days
        free = tuple(
            v
            for v in problem.caravan_days
            if (v.caravan_id, calendar[v.day] if calendar else v.day) not in stays.occupied
        )
        problem = msgspec.structs.replace(problem, caravan_days=free)
    model = _PlanModel(problem)
    # Leave a little of the limit for reading the solution back.
    reserve = min(0.05 * problem.time_limit_s, 0.5)
    stop_at = started + problem.time_limit_s - reserve
    budget = Budget(
        started,
        problem.time_limit_s,
        stop_at,
        on_progress,
        model.cost_offset,
        _PATIENCE,
        should_stop,
    )
    budget.report(None)
    sol: Solution | None = None
    iterations = 0
    repaired: list[int] = []
    if model.asm is not None:
        data = model.asm.data
        neighbours = day_neighbours(model.asm)
        # An empty start: every client is optional and the search inserts what pays.
        sol, iterations = search(
            data,
            neighbours,
            budget,
            problem.seed,
            Solution(data, []),
            _MAX_PENALTY,
            IteratedLocalSearchParams(history_length=DISTANCE_HISTORY),
        )
        if not sol.is_feasible():
            sol, repaired = repair(data, sol)
    result = model.read(sol, started, iterations, repaired, budget.interrupted)
    if problem.stays:
        result = msgspec.structs.replace(
            result, stays=stays.placed, unassigned=result.unassigned + stays.unassigned
        )
    if budget.on_progress is not None:
        budget.on_progress(1.0, result.cost)
    return result
