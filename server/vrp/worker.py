"""What a process-pool worker runs: the solver at the lowest CPU priority. Kept apart from the
planning package so that a freshly started worker imports only the solver."""

from __future__ import annotations

import contextlib
import os

from server.vrp.caravan import solve_plan
from server.vrp.model import PlanProblem, PlanResult

SOLVER_NICENESS = 19
"""Solves yield the CPU to the service and its database: a plan may take a little longer, a
request never waits for a plan."""


def solve_in_worker(problem: PlanProblem, on_progress, should_stop=None) -> PlanResult:
    with contextlib.suppress(OSError):
        current = os.nice(0)
        if current < SOLVER_NICENESS:
            os.nice(SOLVER_NICENESS - current)
    return solve_plan(problem, on_progress, should_stop)
