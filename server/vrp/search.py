"""The search: PyVRP's iterated local search with our own neighbourhood, a stopping
criterion that reports progress, the objective without penalties, and the repair of an
infeasible best solution."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import numpy as np
import pyvrp
from pyvrp import (
    Activity,
    CostEvaluator,
    IteratedLocalSearch,
    IteratedLocalSearchParams,
    PenaltyManager,
    PenaltyParams,
    ProblemData,
    RandomNumberGenerator,
    Solution,
)
from pyvrp.search import OPERATORS, LocalSearch, PerturbationManager, PerturbationParams

from server.vrp.model import ProgressCallback

_PROGRESS_INTERVAL_S: Final = 0.5
INT_MAX: Final = int(np.iinfo(np.int64).max)
DISTANCE_HISTORY: Final = 100
"""Late acceptance's history when a search shortens routes: 100 iterations, not PyVRP's 300.
With a longer memory the search wanders off and converges slowly: RC101L's four long routes
stayed at +6.05 % for 25 s of a 60 s run before leaving that basin. On the long-route variants
of Solomon's type 1 at 10 s (two searches) the mean gap went from +0.59 % to +0.25 % and the
worst from +6.05 % to +1.96 %, type 1 stayed within its targets (mean +0.13 %, worst +1.28 %),
the 106-school caravan month at its default limit came out 1.6–4.6 % shorter on each of four
seeds and the 600-request month 4.7 % shorter (7,379 km against 7,742 at 151 s, two
searches). 50 iterations was worse on the long routes (mean +0.44 %, worst +5.1 %)."""


class Budget:
    """Stopping criterion on wall-clock time that also reports progress.

    With ``patience`` it also stops once that many iterations in a row found no better
    feasible solution: small plans then return long before their time limit. With
    ``should_stop`` it also stops once that returns true; it is asked as often as progress is
    reported (it may be a call to another process).
    """

    def __init__(
        self,
        started: float,
        time_limit_s: float,
        stop_at: float,
        on_progress: ProgressCallback | None,
        cost_offset: int = 0,
        patience: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.cost_offset = cost_offset
        self.started = started
        self.time_limit_s = max(time_limit_s, 1e-9)
        self.stop_at = stop_at
        self.on_progress = on_progress
        self.next_report = 0.0
        self.patience = patience
        self.best = INT_MAX
        self.stale = 0
        self.should_stop = should_stop
        self.interrupted = False

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
            self.report(best_cost - self.cost_offset if best_cost < INT_MAX else None, now)
            if self.should_stop is not None and self.should_stop():
                self.interrupted = True
        if best_cost < self.best:
            self.best, self.stale = best_cost, 0
        else:
            self.stale += 1
        stale = self.patience is not None and self.best < INT_MAX and self.stale > self.patience
        return stale or self.interrupted or now >= self.stop_at


def search(
    data: ProblemData,
    neighbours: dict[Activity, list[Activity]],
    stop: Callable[[int], bool],
    seed: int,
    initial: Solution | None = None,
    max_penalty: float | None = None,
    params: IteratedLocalSearchParams | None = None,
) -> tuple[Solution, int]:
    """PyVRP's iterated local search with our own neighbourhood; returns (best, iterations).

    Penalties start at PyVRP's default midpoint; ``max_penalty`` lets them rise further (per
    unit of time warp or excess load), needed when prizes are large (pins). ``params`` default
    to PyVRP's.
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
    algo = IteratedLocalSearch(data, pm, ls, initial, params or IteratedLocalSearchParams())
    result = algo.run(stop, collect_stats=False, display=False)
    return result.best, result.num_iterations


def objective(sol: Solution) -> int:
    """The objective without penalties: distance, fixed vehicle costs, uncollected prizes."""
    return CostEvaluator([0] * len(sol.excess_load()), 0, 0).cost(sol)


def repair(data: ProblemData, sol: Solution) -> tuple[Solution, list[int]]:
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
