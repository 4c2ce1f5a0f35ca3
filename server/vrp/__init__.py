"""Route planning for the 科普大篷车 science caravans, on PyVRP 0.14.

Pure computation: no database, no tornado. ``server.domain.planning`` turns stored caravans,
duty days and school requests into a :class:`PlanProblem` and runs :func:`solve_plan` in a
process pool (arguments and results are msgspec Structs, so they pickle and serialise).

Modules
-------
* :mod:`~server.vrp.model`: the problem and result types (msgspec Structs: :class:`Depot`,
  :class:`CaravanDay`, :class:`Request`, :class:`Pin`, :class:`PlanProblem`, :class:`Stop`,
  :class:`CaravanRoute`, :class:`Unassigned`, :class:`PlanResult`; for stays :class:`Stay`,
  :class:`Unit`, :class:`StayPlacement`), the day and reason
  constants, :class:`ProgressToQueue`, :class:`StopWhenSet`, the scaled default time limit
  (:func:`scaled_time_limit_s`) and :func:`travel_matrices`.
* :mod:`~server.vrp.assembly`: building PyVRP ``ProblemData`` from client and vehicle-type
  specs (pin locations, routing profiles, forbidden edges) and the day-aware neighbourhood.
* :mod:`~server.vrp.search`: PyVRP's iterated local search with our neighbourhood, the
  stopping criterion that reports progress, the penalty-free objective and the repair of an
  infeasible best solution.
* :mod:`~server.vrp.stays`: placing stays (:class:`Stay` on a :class:`Unit`, days or weeks at
  one site) by branch and bound before the day visits are routed: :func:`place_stays`.
* :mod:`~server.vrp.caravan`: the caravan model (one vehicle per caravan-day, one optional
  client per request, day and opening window, pins) and :func:`solve_plan`; its docstring
  describes the model.
* :mod:`~server.vrp.solomon`: Solomon-style VRPTW instances through the same assembly and
  search, for ``bench/solomon.py`` and the tests only; import it from there, it is not
  re-exported here.

The public API of the planner is re-exported here: ``from server import vrp;
vrp.solve_plan(...)``.
"""

from server.vrp.caravan import solve_plan
from server.vrp.model import (
    DAY_S,
    DAY_STRIDE_S,
    MIN_TIME_LIMIT_S,
    PIN_PRIZE_FACTOR,
    REASON_CAPACITY,
    REASON_EXCLUDED,
    REASON_NO_ALLOWED_DAY,
    REASON_PIN_INFEASIBLE,
    REASON_UNREACHABLE,
    SIDE_SEED,
    CaravanDay,
    CaravanRoute,
    Depot,
    Pin,
    PlanProblem,
    PlanResult,
    ProgressToQueue,
    Request,
    Stay,
    StayPlacement,
    Stop,
    StopWhenSet,
    Unassigned,
    Unit,
    best_plan,
    scaled_time_limit_s,
    travel_matrices,
)
from server.vrp.stays import StayOutcome, place_stays

__all__ = [
    "DAY_S",
    "DAY_STRIDE_S",
    "MIN_TIME_LIMIT_S",
    "PIN_PRIZE_FACTOR",
    "REASON_CAPACITY",
    "REASON_EXCLUDED",
    "REASON_NO_ALLOWED_DAY",
    "REASON_PIN_INFEASIBLE",
    "REASON_UNREACHABLE",
    "SIDE_SEED",
    "CaravanDay",
    "CaravanRoute",
    "Depot",
    "Pin",
    "PlanProblem",
    "PlanResult",
    "ProgressToQueue",
    "Request",
    "Stay",
    "StayOutcome",
    "StayPlacement",
    "Stop",
    "StopWhenSet",
    "Unassigned",
    "Unit",
    "best_plan",
    "place_stays",
    "scaled_time_limit_s",
    "solve_plan",
    "travel_matrices",
]
