"""The plan as the solver's problem, and the solver's result as the plan's routes.

`build_problem` turns a plan's caravans (and their depots), its working days (less each
caravan's maintenance days) and its open requests at their sites (opening hours, allowed days),
with the dispatcher's pins and exclusions, into a :class:`server.vrp.PlanProblem`;
`result_fields` turns the solver's :class:`server.vrp.PlanResult` back into the
fields of the plan document, in UTC times, with the totals of the run and of the run before.

The search's time limit is the one the dispatcher asked for, or else the default scaled to the
plan as it stands (open visits, not excluded, times caravan-days on duty).

A stay request becomes a :class:`server.vrp.Stay` on the calendar of the plan's period (day 0
its start date, weekends included), every caravan of the plan a :class:`server.vrp.Unit` that
may host it; the days a placed stay occupies are no caravan-days for day visits. Stays are
stored on the plan as `stays`, one per request: its unit (`caravan_id`), site and days.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta

from bson import ObjectId

from server import vrp
from server.clock import SHANGHAI
from server.domain import caravans, sites
from server.domain.caravans.visit_requests import is_stay
from server.domain.planning.models import MAX_TIME_LIMIT_S

SITE_BATCH = 8
REASON_ALREADY_SCHEDULED = "already_scheduled"


def working_days(plan: dict) -> list[str]:
    start = date.fromisoformat(plan["start_date"])
    end = date.fromisoformat(plan["end_date"])
    weekdays = set(plan["weekdays"])
    span = (end - start).days + 1
    days = (start + timedelta(days=i) for i in range(span))
    return [d.isoformat() for d in days if d.isoweekday() in weekdays]


async def build_problem(ctx, plan: dict) -> tuple[vrp.PlanProblem, list[str], list]:
    """The routing problem of the plan as it stands; also its days and the requests that were
    scheduled elsewhere since the plan was made (left out, reported). `plan` is the document as
    its solve claimed it: its `runs`, this solve counted, seed the search."""
    days = working_days(plan)
    index = {d: i for i, d in enumerate(days)}
    fleet = await caravans.caravans_by_id(ctx, plan["caravan_ids"])
    depots = await caravans.depots_by_id(ctx, list({c["depot_id"] for c in fleet.values()}))
    stored = await caravans.requests_by_id(ctx, plan["request_ids"])
    requests = [stored[r] for r in plan["request_ids"] if r in stored]
    gone = [r["_id"] for r in requests if r["status"] != "open"]
    requests = [r for r in requests if r["status"] == "open"]
    stays = [r for r in requests if is_stay(r)]
    requests = [r for r in requests if not is_stay(r)]
    site_ids = list({r["site_id"] for r in requests + stays})
    site_of: dict[ObjectId, dict] = {}
    for i in range(0, len(site_ids), SITE_BATCH):  # a few at a time: leave the pool to requests
        batch = site_ids[i : i + SITE_BATCH]
        for doc in await asyncio.gather(*(sites.get_site_doc(ctx, s) for s in batch)):
            site_of[doc["_id"]] = doc

    duty_start = sites.minutes(plan["duty_start"]) * 60
    duty_end = sites.minutes(plan["duty_end"]) * 60
    max_duty = int(plan["max_duty_h"] * 3600)
    caravan_days = [
        vrp.CaravanDay(
            caravan_id=str(c["_id"]),
            day=i,
            depot_id=str(c["depot_id"]),
            duty_start_s=duty_start,
            duty_end_s=duty_end,
            max_duty_s=max_duty,
        )
        for c in fleet.values()
        if c.get("active", True) and c["depot_id"] in depots
        for i in range(len(days))
        if days[i] not in c.get("unavailable", ())  # a maintenance day: the caravan stays in
    ]
    problem_requests = []
    for r in requests:
        site = site_of[r["site_id"]]
        lng, lat = site["location"]["coordinates"]
        allowed = tuple(i for d, i in index.items() if r["earliest_date"] <= d <= r["latest_date"])
        by_day: dict[int, tuple] = {}
        if site.get("open_hours"):
            for i in allowed:
                weekday = date.fromisoformat(days[i]).isoweekday()
                by_day[i] = tuple(
                    sorted(
                        (sites.minutes(h["start"]) * 60, sites.minutes(h["end"]) * 60)
                        for h in site["open_hours"]
                        if h["weekday"] == weekday
                    )
                )
        problem_requests.append(
            vrp.Request(
                request_id=str(r["_id"]),
                site_id=str(site["_id"]),
                lng=lng,
                lat=lat,
                allowed_days=allowed,
                service_s=r["duration_min"] * 60,
                priority=r["priority"],
                open_hours_by_day=by_day,
            )
        )
    first = date.fromisoformat(plan["start_date"])
    horizon = (date.fromisoformat(plan["end_date"]) - first).days + 1

    def calendar_day(day: str) -> int:
        return (date.fromisoformat(day) - first).days

    open_ids = {r["_id"] for r in requests}
    stay_ids = {r["_id"] for r in stays}
    pins = tuple(
        vrp.Pin(
            request_id=str(p["request_id"]), caravan_id=str(p["caravan_id"]), day=index[p["date"]]
        )
        for p in plan["pins"]
        if p["request_id"] in open_ids and p["date"] in index
    )
    stay_pins = tuple(
        vrp.Pin(
            request_id=str(p["request_id"]),
            caravan_id=str(p["caravan_id"]),
            day=calendar_day(p["date"]),
        )
        for p in plan["pins"]
        if p["request_id"] in stay_ids
    )
    units = tuple(
        vrp.Unit(
            unit_id=str(c["_id"]),
            depot_id=str(c["depot_id"]),
            blocked_days=tuple(
                calendar_day(d) for d in c.get("unavailable", ()) if 0 <= calendar_day(d) < horizon
            ),
        )
        for c in fleet.values()
        if c.get("active", True) and c["depot_id"] in depots
    )
    problem_stays = tuple(
        vrp.Stay(
            request_id=str(r["_id"]),
            site_id=str(r["site_id"]),
            lng=site_of[r["site_id"]]["location"]["coordinates"][0],
            lat=site_of[r["site_id"]]["location"]["coordinates"][1],
            earliest=calendar_day(r["earliest_date"]),
            latest=calendar_day(r["latest_date"]),
            open_days=r["duration_days"],
            setup_days=r["setup_days"],
            teardown_days=r["teardown_days"],
            priority=r["priority"],
        )
        for r in stays
    )
    excluded = tuple(str(r) for r in plan["excluded"] if r in open_ids | stay_ids)
    requested = plan.get("requested_time_limit_s", plan["time_limit_s"])
    time_limit_s = requested or vrp.scaled_time_limit_s(
        len(problem_requests) - len(excluded), len(caravan_days), MAX_TIME_LIMIT_S
    )
    problem = vrp.PlanProblem(
        depots=tuple(
            vrp.Depot(
                depot_id=str(d["_id"]),
                lng=d["location"]["coordinates"][0],
                lat=d["location"]["coordinates"][1],
            )
            for d in depots.values()
        ),
        caravan_days=tuple(caravan_days),
        requests=tuple(problem_requests),
        pins=pins,
        excluded=excluded,
        time_limit_s=float(time_limit_s),
        seed=plan["runs"] - 1,  # the runs before this one: 0 for the first
        stays=problem_stays,
        units=units,
        stay_pins=stay_pins,
        horizon_days=horizon,
        calendar_days=tuple(calendar_day(d) for d in days),
    )
    return problem, days, gone


def _at(day: str, seconds: int) -> datetime:
    midnight = datetime.combine(date.fromisoformat(day), time(), tzinfo=SHANGHAI)
    return (midnight + timedelta(seconds=seconds)).astimezone(UTC)


def result_fields(
    ctx, plan: dict, result: vrp.PlanResult, days: list[str], gone: list, searches: int = 1
) -> dict:
    """The plan document's fields for ``result``, a solve of ``plan`` (as its solve claimed it,
    so its totals are the previous run's); ``result.iterations`` sums ``searches`` searches."""
    routes = [
        {
            "caravan_id": ObjectId(r.caravan_id),
            "date": days[r.day],
            "depot_id": ObjectId(r.depot_id),
            "end_depot_id": ObjectId(r.depot_id),  # every duty day is a round trip, for now
            "leave_at": _at(days[r.day], r.leave_s),
            "return_at": _at(days[r.day], r.return_s),
            "stops": [
                {
                    "site_id": ObjectId(s.site_id),
                    "request_id": ObjectId(s.request_id),
                    "arrive_at": _at(days[r.day], s.arrive_s),
                    "start_at": _at(days[r.day], s.start_s),
                    "depart_at": _at(days[r.day], s.depart_s),
                }
                for s in r.stops
            ],
            "distance_km": round(r.distance_m / 1000, 1),
            "duration_min": round(r.duration_s / 60, 1),
        }
        for r in result.routes
        if r.stops
    ]
    first = date.fromisoformat(plan["start_date"])

    def on(day: int) -> str:
        return (first + timedelta(days=day)).isoformat()

    stays = [
        {
            "request_id": ObjectId(s.request_id),
            "site_id": ObjectId(s.site_id),
            "caravan_id": ObjectId(s.unit_id),
            "depot_id": ObjectId(s.depot_id),
            "setup_from": on(s.first_day),
            "first_day": on(s.open_day),
            "last_day": on(s.close_day),
            "teardown_until": on(s.last_day),
            "distance_km": round(s.distance_m / 1000, 1),
        }
        for s in result.stays
    ]
    unassigned = [
        {"request_id": ObjectId(u.request_id), "reason": u.reason, "detail": u.detail}
        for u in result.unassigned
    ] + [
        {"request_id": r, "reason": REASON_ALREADY_SCHEDULED, "detail": "scheduled by another plan"}
        for r in gone
    ]
    total_distance_km = round(result.distance_m / 1000, 1)
    return {
        "status": "done",
        "progress": 1.0,
        "best_cost": result.cost,
        "feasible": result.feasible,
        "routes": routes,
        "stays": stays,
        "unassigned": unassigned,
        "total_distance_km": total_distance_km,
        "runtime_s": round(result.runtime_s, 3),
        "iterations": result.iterations,
        "searches": searches,
        "totals": {
            "run": plan["runs"],
            "distance_km": total_distance_km,
            "visits": sum(len(r["stops"]) for r in routes),
            "stays": len(stays),
            "unassigned": len(unassigned),
        },
        "previous": plan.get("totals"),
        "finished_at": ctx.clock.now(),
    }
