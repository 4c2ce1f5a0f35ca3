"""Model assembly shared by the planner and the Solomon path: PyVRP ``ProblemData`` built
from client and vehicle-type specs, and the day-aware granular neighbourhood."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyvrp
from pyvrp import Activity, ActivityType, ClientGroup, ProblemData

from server.vrp.model import DAY_S, CaravanDay

FORBIDDEN: Final = 10 * DAY_S
"""Distance (m) and duration (s) of edges that a vehicle type must never use: longer than any
duty day, so a route using one always has time warp."""

_SAME_DAY_NEIGHBOURS: Final = 25
_OTHER_DAY_NEIGHBOURS: Final = 25
_WEIGHT_WAIT: Final = 0.2
_WEIGHT_TIME_WARP: Final = 1.0


@dataclass(slots=True)
class ClientSpec:
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
class VehicleTypeSpec:
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
class Assembly:
    data: ProblemData
    clients: list[ClientSpec]
    vtypes: list[VehicleTypeSpec]
    dur: np.ndarray  # base duration matrix over real points (no forbidden edges)


def assemble(
    points: Sequence[tuple[float, float]],
    dist: np.ndarray,
    dur: np.ndarray,
    num_depots: int,
    clients: list[ClientSpec],
    groups: list[list[int]],
    vtypes: list[VehicleTypeSpec],
    pin_locs: Sequence[tuple[int, int]] = (),
    num_profiles: int = 1,
) -> Assembly:
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
    return Assembly(data=data, clients=clients, vtypes=vtypes, dur=dur)


def day_neighbours(
    asm: Assembly, same_day: int = _SAME_DAY_NEIGHBOURS, other_days: int = _OTHER_DAY_NEIGHBOURS
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
