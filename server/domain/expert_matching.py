"""Matching chief science experts to county expert requests: a pure function, no database.

The matching is a min-cost maximum flow, solved exactly by OR-Tools' SimpleMinCostFlow:

    source → request (1) → expert-day (1) → expert-month (visits left) → sink

A request is joined to an expert-day when the expert covers at least one of the request's
fields and is free on a date the request prefers; the expert-day node holds one request (an
expert is at one request a day) and the expert-month node the visits the expert has left that
month. `solve_max_flow_with_min_cost` maximises the matched requests first; among those, each
arc's cost, (most fields any request asks − fields covered) · W + travel metres with W above any
total travel, makes it maximise the fields covered, then minimise travel. Flows on such a
network are integral, so the optimum is an assignment.

`refusal` checks one change an operator makes to a matching (a swap) against the same rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from ortools.graph.python import min_cost_flow

from server import geo

Month = tuple[int, int]

NO_EXPERT_IN_FIELD = "no_expert_in_field"
NO_FREE_EXPERT = "no_free_expert"
MONTHLY_LIMIT = "monthly_limit"
TAKEN = "taken"

# What `refusal` answers.
DATE_NOT_PREFERRED = "date_not_preferred"
FIELD_MISMATCH = "field_mismatch"
EXPERT_UNAVAILABLE = "expert_unavailable"
EXPERT_BUSY = "expert_busy"


@dataclass(frozen=True)
class ExpertSlot:
    """An expert as the matcher sees them: `free` are the days they can still take (days of
    visits already published removed), `booked` the visits already published per month."""

    id: str
    fields: frozenset[str]
    free: frozenset[date]
    home: tuple[float, float]  # (lng, lat), WGS-84
    booked: Mapping[Month, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestSlot:
    id: str
    fields: frozenset[str]
    dates: frozenset[date]  # the preferred dates the matching may use
    place: tuple[float, float]  # (lng, lat), WGS-84


@dataclass(frozen=True)
class Assignment:
    request_id: str
    expert_id: str
    date: date
    fit: int  # the request's fields the expert covers
    travel_m: int  # from the expert's home city to the request's place


@dataclass(frozen=True)
class Matching:
    assignments: tuple[Assignment, ...]
    unmatched: Mapping[str, str]  # request id → why (one of the reasons above)

    @property
    def objective(self) -> tuple[int, int, int]:
        """What the matching maximises, in order: matched requests, fields covered, −travel."""
        return objective(self.assignments)


def objective(assignments: Iterable[Assignment]) -> tuple[int, int, int]:
    chosen = list(assignments)
    return len(chosen), sum(a.fit for a in chosen), -sum(a.travel_m for a in chosen)


def month_of(day: date) -> Month:
    return day.year, day.month


def fit(expert: ExpertSlot, request: RequestSlot) -> int:
    return len(expert.fields & request.fields)


def travel_m(expert: ExpertSlot, request: RequestSlot) -> int:
    return round(geo.distance_m(expert.home, request.place))


def visits_left(expert: ExpertSlot, month: Month, monthly_limit: int) -> int:
    return max(0, monthly_limit - expert.booked.get(month, 0))


def match(experts: list[ExpertSlot], requests: list[RequestSlot], monthly_limit: int) -> Matching:
    """An optimal matching (see the module docstring); deterministic for the same input."""
    arcs: list[tuple[int, int, date, int, int]] = []  # request, expert, day, fit, travel
    for r, request in enumerate(requests):
        for e, expert in enumerate(experts):
            covered = fit(expert, request)
            if not covered:
                continue
            days = sorted(
                d
                for d in request.dates & expert.free
                if visits_left(expert, month_of(d), monthly_limit)
            )
            if days:
                travel = travel_m(expert, request)
                arcs.extend((r, e, d, covered, travel) for d in days)
    chosen = _solve(arcs, len(requests), experts, monthly_limit) if arcs else []
    assignments = tuple(
        Assignment(requests[r].id, experts[e].id, d, covered, travel)
        for r, e, d, covered, travel in sorted(chosen, key=lambda a: (a[2], a[0]))
    )
    matched = {a.request_id for a in assignments}
    unmatched = {
        request.id: _why_unmatched(request, experts, monthly_limit)
        for request in requests
        if request.id not in matched
    }
    return Matching(assignments=assignments, unmatched=unmatched)


def _solve(
    arcs: list[tuple[int, int, date, int, int]],
    n_requests: int,
    experts: list[ExpertSlot],
    monthly_limit: int,
) -> list[tuple[int, int, date, int, int]]:
    nodes: dict[object, int] = {}

    def node(key: object) -> int:
        return nodes.setdefault(key, len(nodes))

    source, sink = node("source"), node("sink")
    most_fields = max(a[3] for a in arcs)
    # Above any total travel, so one more field covered outweighs every saving in travel.
    weight = sum(max(a[4] for a in arcs if a[0] == r) for r in {a[0] for a in arcs}) + 1
    flow = min_cost_flow.SimpleMinCostFlow()
    assignment_arcs = []
    for r, e, d, covered, travel in arcs:
        cost = (most_fields - covered) * weight + travel
        assignment_arcs.append(
            flow.add_arc_with_capacity_and_unit_cost(node(("r", r)), node(("d", e, d)), 1, cost)
        )
    for r in sorted({a[0] for a in arcs}):
        flow.add_arc_with_capacity_and_unit_cost(source, node(("r", r)), 1, 0)
    for e, d in sorted({(a[1], a[2]) for a in arcs}):
        month = month_of(d)
        flow.add_arc_with_capacity_and_unit_cost(node(("d", e, d)), node(("m", e, month)), 1, 0)
    for e, month in sorted({(a[1], month_of(a[2])) for a in arcs}):
        left = visits_left(experts[e], month, monthly_limit)
        flow.add_arc_with_capacity_and_unit_cost(node(("m", e, month)), sink, left, 0)
    flow.set_node_supply(source, n_requests)
    flow.set_node_supply(sink, -n_requests)
    status = flow.solve_max_flow_with_min_cost()
    if status != flow.OPTIMAL:
        raise RuntimeError(f"min-cost flow ended with status {status}")
    return [arc for arc, index in zip(arcs, assignment_arcs, strict=True) if flow.flow(index)]


def _why_unmatched(request: RequestSlot, experts: list[ExpertSlot], monthly_limit: int) -> str:
    in_field = [e for e in experts if fit(e, request)]
    if not in_field:
        return NO_EXPERT_IN_FIELD
    free = [(e, d) for e in in_field for d in request.dates & e.free]
    if not free:
        return NO_FREE_EXPERT
    if not any(visits_left(e, month_of(d), monthly_limit) for e, d in free):
        return MONTHLY_LIMIT
    return TAKEN


def refusal(
    assignments: Iterable[Assignment],
    expert: ExpertSlot,
    request: RequestSlot,
    day: date,
    monthly_limit: int,
) -> str | None:
    """Why `expert` may not take `request` on `day` beside the other `assignments` of the same
    matching (the request's own assignment, if any, is ignored); None when they may."""
    if day not in request.dates:
        return DATE_NOT_PREFERRED
    if not fit(expert, request):
        return FIELD_MISMATCH
    if day not in expert.free:
        return EXPERT_UNAVAILABLE
    theirs = [a for a in assignments if a.expert_id == expert.id and a.request_id != request.id]
    if any(a.date == day for a in theirs):
        return EXPERT_BUSY
    in_month = Counter(month_of(a.date) for a in theirs)[month_of(day)]
    if in_month >= visits_left(expert, month_of(day), monthly_limit):
        return MONTHLY_LIMIT
    return None
