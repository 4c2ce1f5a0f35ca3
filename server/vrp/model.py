"""The planner's problem and result types, and travel between points.

Problems and results are msgspec Structs and :class:`ProgressToQueue` pickles, so they cross
process boundaries and serialise. Times are seconds of day; distances are metres.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec
import numpy as np

from server.geo import distance_matrix_m

DAY_S: Final = 86_400
DAY_STRIDE_S: Final = 2 * DAY_S
"""Distance in solver time between the starts of consecutive days."""

PIN_PRIZE_FACTOR: Final = 1000
"""A pinned visit's prize is this many times the largest prize of an unpinned request."""

REASON_EXCLUDED: Final = "excluded"
REASON_NO_ALLOWED_DAY: Final = "no_allowed_day"
REASON_UNREACHABLE: Final = "unreachable_in_duty_day"
REASON_CAPACITY: Final = "capacity"
REASON_PIN_INFEASIBLE: Final = "pin_infeasible"

_SCHOOL_HOURS: Final = ((8 * 3600, 17 * 3600),)

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


class Unit(msgspec.Struct, frozen=True, kw_only=True):
    """A caravan as a host of stays: its depot and its maintenance days (calendar-day indices of
    the horizon), which no stay may include."""

    unit_id: str
    depot_id: str
    blocked_days: tuple[int, ...] = ()


class Stay(msgspec.Struct, frozen=True, kw_only=True):
    """A site asking for a unit (a 流动科技馆 tour) for ``open_days`` consecutive days, every
    one of them in ``[earliest, latest]`` (calendar-day indices of the horizon; they may reach
    beyond it). The unit occupies the site ``setup_days`` before the first opening day and
    ``teardown_days`` after the last; that whole occupancy lies inside the horizon, and the
    unit moves between stays during those days."""

    request_id: str
    site_id: str
    lng: float
    lat: float
    earliest: int
    latest: int
    open_days: int
    setup_days: int = 0
    teardown_days: int = 0
    priority: int = 1

    @property
    def occupied_days(self) -> int:
        return self.setup_days + self.open_days + self.teardown_days


class PlanProblem(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one plan needs. ``excluded`` requests (day visits or stays) are left out
    (reported as such, and an exclusion beats a pin of the same request); ``pins`` hold what the
    dispatcher fixed; ``time_limit_s`` bounds the wall-clock time of :func:`solve_plan`. Prizes
    and costs are in metres.

    Stays count days of the calendar (``horizon_days`` of them, day 0 the first), not working
    days: a tour stays open at weekends. ``calendar_days[i]`` is the calendar day of working
    day ``i`` (empty: every day a working day), so the unit-days stays take are removed from
    ``caravan_days``. ``stay_pins`` fix a stay's unit (``caravan_id``) and first opening day
    (``day``, a calendar day)."""

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
    stays: tuple[Stay, ...] = ()
    units: tuple[Unit, ...] = ()
    stay_pins: tuple[Pin, ...] = ()
    horizon_days: int = 0
    calendar_days: tuple[int, ...] = ()


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


class StayPlacement(msgspec.Struct, frozen=True, kw_only=True):
    """A stay as placed: its unit occupies the site from ``first_day`` to ``last_day`` and it is
    open from ``open_day`` to ``close_day`` (calendar days, both ends included);
    ``distance_m`` is the unit's drive from its depot there and back."""

    request_id: str
    site_id: str
    unit_id: str
    depot_id: str
    first_day: int
    open_day: int
    close_day: int
    last_day: int
    distance_m: int


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
    """The search's effort: unlike ``runtime_s``, independent of the machine's load."""
    fleet_iterations: int = 0
    """Iterations spent removing caravan-days. Always 0: the fleet is the caravans on duty and
    an unused caravan-day costs nothing, so the whole budget goes to distance."""
    repaired_visits: int = 0
    """Visits dropped after the search because the best solution was not feasible (normally 0)."""
    interrupted: bool = False
    """The search was told to stop before its time limit (see :class:`StopWhenSet`)."""
    stays: tuple[StayPlacement, ...] = ()
    """The stays placed; ``routes`` and ``distance_m`` are the day visits'."""


class ProgressToQueue:
    """Picklable ``on_progress`` that puts ``(fraction, best_cost)`` on a queue.

    Give it a ``multiprocessing.Manager().Queue()`` (or any object with ``put_nowait``) to read
    the progress of a plan that runs in a process pool.
    """

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def __call__(self, fraction: float, best_cost: int | None) -> None:
        self.queue.put_nowait((fraction, best_cost))


class StopWhenSet:
    """Picklable ``should_stop`` for :func:`~server.vrp.solve_plan`: true once ``event`` (a
    ``multiprocessing.Manager().Event()`` or any object with ``is_set``) is set: when the solve
    it belongs to ended early (cancelled, taken over), or, for a search run beside another one
    to use an idle core, when that core is wanted elsewhere."""

    def __init__(self, event: Any) -> None:
        self.event = event

    def __call__(self) -> bool:
        try:
            return bool(self.event.is_set())
        except Exception:  # the manager is gone: the plan it belonged to has ended
            return True


SIDE_SEED: Final = 1_000_003
"""Seed offset of a search run beside the first one on a spare core (another path through the
search)."""


def best_plan(results: Sequence[PlanResult]) -> PlanResult:
    """The feasible plan of least cost among searches of one problem; its iterations are those
    of every search."""
    best = min(results, key=lambda r: (not r.feasible, r.cost))
    return msgspec.structs.replace(best, iterations=sum(r.iterations for r in results))


# --------------------------------------------------------------------------------------------
# Time limit
# --------------------------------------------------------------------------------------------

MIN_TIME_LIMIT_S: Final = 10
SECONDS_PER_VISIT_DAY: Final = 3.9e-4
"""Seconds of search per (visit × caravan-day) in the scaled default: 150 s for the 600 visits
and 600 caravan-days of ``bench/caravan_month.py --case month600``. There a search still gains
about 1.7 % per further 30 s around two minutes, and seeds differ by as much: at 100 s the plan
was 1.3–4 % above the 120 s plan, so the default sits past 120 s rather than below it."""


def scaled_time_limit_s(visits: int, caravan_days: int, cap_s: int) -> int:
    """The default time limit of a plan: grows with visits × caravan-days (the visits' copies
    the search places, times the routes it can place them in), from ``MIN_TIME_LIMIT_S`` up to
    ``cap_s``. Small plans rarely use it: the search stops when it has stalled."""
    scaled = MIN_TIME_LIMIT_S + SECONDS_PER_VISIT_DAY * max(visits, 0) * max(caravan_days, 0)
    return int(min(max(math.ceil(scaled), MIN_TIME_LIMIT_S), cap_s))


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
