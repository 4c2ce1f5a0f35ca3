"""Placing stays (a 流动科技馆 tour's days or weeks at one site) before the day visits are routed.

Each stay has few feasible placements: a unit and a first opening day such that the unit's
whole occupancy (set-up, opening and tear-down days) lies inside the horizon and includes no
maintenance day of the unit, and the opening days lie inside the request's range. They are
enumerated, and a depth-first branch and bound chooses at most one per stay so that no unit
holds two stays on one day, maximising first the placed stays' total priority (a pinned stay
counts ``PIN_PRIZE_FACTOR`` times the top priority, so pins hold whenever they can) and then
minimising the units' drive from their depots. Stays are branched on by priority and then
fewest placements, each stay's placements cheapest and earliest first, so the first complete
branch is the greedy plan; the bound (the score so far plus every remaining stay at its best)
prunes the rest. Plans hold few stays, so the search is normally exhaustive, hence optimal; it
stops at ``deadline`` or ``MAX_NODES`` with the best plan found.

The days the placed stays occupy are then no caravan-days of the day-visit problem
(:func:`server.vrp.caravan.solve_plan` removes them).
"""

from __future__ import annotations

import time
from typing import Final

import msgspec
import numpy as np

from server.vrp.model import (
    PIN_PRIZE_FACTOR,
    REASON_CAPACITY,
    REASON_EXCLUDED,
    REASON_NO_ALLOWED_DAY,
    REASON_PIN_INFEASIBLE,
    PlanProblem,
    Stay,
    StayPlacement,
    Unassigned,
    travel_matrices,
)

MAX_NODES: Final = 200_000
"""Branches explored at most; far beyond what a province's stays of one plan need."""


class StayOutcome(msgspec.Struct, frozen=True, kw_only=True):
    placed: tuple[StayPlacement, ...]
    unassigned: tuple[Unassigned, ...]
    occupied: frozenset[tuple[str, int]]
    """(unit id, calendar day) taken by a placed stay."""
    proven: bool
    """The search was exhaustive: the placement is optimal."""


class _Option(msgspec.Struct, frozen=True):
    cost: int
    unit: int
    open_day: int
    mask: int  # the occupied days of the unit, one bit per calendar day


def validate_stays(problem: PlanProblem) -> None:
    ids = [s.request_id for s in problem.stays]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate stay request_id")
    if set(ids) & {r.request_id for r in problem.requests}:
        raise ValueError("a request is both a stay and a day visit")
    for s in problem.stays:
        if s.open_days < 1 or s.setup_days < 0 or s.teardown_days < 0 or s.priority < 1:
            raise ValueError(f"stay {s.request_id}: bad days or priority")
    depots = {d.depot_id for d in problem.depots}
    unit_ids = [u.unit_id for u in problem.units]
    if len(set(unit_ids)) != len(unit_ids):
        raise ValueError("duplicate unit_id")
    if unknown := {u.depot_id for u in problem.units} - depots:
        raise ValueError(f"units at unknown depots: {sorted(unknown)}")
    if problem.stays and problem.horizon_days < 1:
        raise ValueError("stays need horizon_days")
    if problem.calendar_days and any(
        not 0 <= v.day < len(problem.calendar_days) for v in problem.caravan_days
    ):
        raise ValueError("calendar_days must give the calendar day of every working day")
    pinned = [p.request_id for p in problem.stay_pins]
    if len(set(pinned)) != len(pinned) or not set(pinned) <= set(ids):
        raise ValueError("stay pins must name distinct stays")


def place_stays(problem: PlanProblem, deadline: float | None = None) -> StayOutcome:
    """The stays' placement (see the module's docstring); ``deadline`` is a
    ``time.perf_counter()`` value."""
    validate_stays(problem)
    excluded = set(problem.excluded)
    unassigned: dict[str, Unassigned] = {}

    def drop(stay: Stay, reason: str, detail: str) -> None:
        unassigned[stay.request_id] = Unassigned(
            request_id=stay.request_id, reason=reason, detail=detail
        )

    units = problem.units
    depot_index = {d.depot_id: i for i, d in enumerate(problem.depots)}
    points = [(d.lng, d.lat) for d in problem.depots] + [(s.lng, s.lat) for s in problem.stays]
    dist, _ = travel_matrices(
        np.asarray([p[0] for p in points]),
        np.asarray([p[1] for p in points]),
        problem.road_factor,
        problem.speed_kmh,
    )
    blocked = [sum(1 << d for d in set(u.blocked_days) if d >= 0) for u in units]
    pins = {p.request_id: p for p in problem.stay_pins}
    top = max((s.priority for s in problem.stays), default=1)

    candidates: list[tuple[Stay, int, list[_Option]]] = []
    for si, stay in enumerate(problem.stays):
        if stay.request_id in excluded:
            drop(stay, REASON_EXCLUDED, "removed by dispatcher")
            continue
        site = len(problem.depots) + si
        first = max(stay.earliest, stay.setup_days)
        last = min(stay.latest, problem.horizon_days - stay.teardown_days) - stay.open_days + 1
        pin = pins.get(stay.request_id)
        span = (1 << stay.occupied_days) - 1
        options, clear = [], False
        for ui, unit in enumerate(units):
            if pin is not None and unit.unit_id != pin.caravan_id:
                continue
            depot = depot_index[unit.depot_id]
            cost = int(dist[depot, site] + dist[site, depot])
            for open_day in range(first, last + 1):
                if pin is not None and open_day != pin.day:
                    continue
                clear = True
                mask = span << (open_day - stay.setup_days)
                if not mask & blocked[ui]:
                    options.append(_Option(cost, ui, open_day, mask))
        if not options:
            if pin is not None:
                drop(stay, REASON_PIN_INFEASIBLE, "the pinned unit cannot stay from that day")
            elif stay.latest - stay.earliest + 1 < stay.open_days:
                drop(stay, REASON_NO_ALLOWED_DAY, "fewer days requested than the stay's")
            elif not units:
                drop(stay, REASON_NO_ALLOWED_DAY, "no unit in the plan")
            elif clear:
                drop(stay, REASON_NO_ALLOWED_DAY, "every unit has a maintenance day in each span")
            else:
                drop(stay, REASON_NO_ALLOWED_DAY, "set-up, opening and tear-down exceed the plan")
            continue
        options.sort(key=lambda o: (o.cost, o.open_day, o.unit))
        weight = PIN_PRIZE_FACTOR * top if pin is not None else stay.priority
        candidates.append((stay, weight, options))

    # One priority point outweighs all the driving there is.
    scale = 1 + sum(max(o.cost for o in opts) for _, _, opts in candidates)
    candidates.sort(key=lambda c: (-c[1], len(c[2])))
    best_each = [w * scale - opts[0].cost for _, w, opts in candidates]
    suffix = [0] * (len(candidates) + 1)
    for i in range(len(candidates) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + best_each[i]

    search = _Search(candidates, suffix, scale, len(units), deadline)
    search.run()

    placed = []
    occupied: set[tuple[str, int]] = set()
    for (stay, _, options), choice in zip(candidates, search.best, strict=True):
        if choice < 0:
            detail = "pinned, but its unit is taken" if stay.request_id in pins else ""
            drop(
                stay,
                REASON_PIN_INFEASIBLE if detail else REASON_CAPACITY,
                detail or "fits alone, but no unit is free for it",
            )
            continue
        option = options[choice]
        unit = units[option.unit]
        first_day = option.open_day - stay.setup_days
        occupied.update((unit.unit_id, d) for d in range(first_day, first_day + stay.occupied_days))
        placed.append(
            StayPlacement(
                request_id=stay.request_id,
                site_id=stay.site_id,
                unit_id=unit.unit_id,
                depot_id=unit.depot_id,
                first_day=first_day,
                open_day=option.open_day,
                close_day=option.open_day + stay.open_days - 1,
                last_day=first_day + stay.occupied_days - 1,
                distance_m=option.cost,
            )
        )
    order = {s.request_id: i for i, s in enumerate(problem.stays)}
    placed.sort(key=lambda p: (p.first_day, p.unit_id))
    return StayOutcome(
        placed=tuple(placed),
        unassigned=tuple(sorted(unassigned.values(), key=lambda u: order[u.request_id])),
        occupied=frozenset(occupied),
        proven=search.proven,
    )


class _Search:
    """The branch and bound over the stays' placements (see the module's docstring)."""

    def __init__(self, candidates, suffix, scale, units, deadline):
        self.candidates, self.suffix, self.scale = candidates, suffix, scale
        self.deadline = deadline
        self.taken = [0] * units
        self.choice = [-1] * len(candidates)
        self.best = list(self.choice)
        self.best_score: int | None = None
        self.nodes = 0
        self.proven = True

    def run(self) -> None:
        self._branch(0, 0)

    def _out_of_budget(self) -> bool:
        self.nodes += 1
        if self.nodes > MAX_NODES or (
            self.deadline is not None
            and self.nodes % 1024 == 0
            and time.perf_counter() > self.deadline
        ):
            self.proven = False
        return not self.proven

    def _branch(self, i: int, score: int) -> None:
        if self.best_score is not None and score + self.suffix[i] <= self.best_score:
            return
        if i == len(self.candidates):
            self.best_score, self.best = score, list(self.choice)
            return
        if self._out_of_budget():
            return
        _, weight, options = self.candidates[i]
        for k, option in enumerate(options):
            if self.taken[option.unit] & option.mask:
                continue
            self.taken[option.unit] |= option.mask
            self.choice[i] = k
            self._branch(i + 1, score + weight * self.scale - option.cost)
            self.taken[option.unit] &= ~option.mask
            self.choice[i] = -1
            if not self.proven:
                return
        self._branch(i + 1, score)
