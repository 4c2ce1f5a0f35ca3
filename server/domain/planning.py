"""Caravan plans: which caravan visits which site on which working day.

Owns the `plans` collection. A plan gathers the open visit requests and the caravans of an
organisation's subtree over a date range, turns them into a :class:`server.routing.PlanProblem`
and solves it in the context's process pool, never on the event loop. The solve runs as a
background asyncio task started by `create_plan` (and by `replan`), kept in a registry of this
process keyed by plan id; the task reads the solver's progress from a manager queue and writes
it to the plan document, then stores the routes with each stop's arrival and departure.

States: queued → running → done | failed. The dispatcher reviews a done plan, pins a visit to a
caravan and day or removes (excludes) one, re-plans (pins and exclusions hold), and publishes:
every planned visit becomes a published activity at its site that volunteers join as crew.

A plan made for a campaign (server/domain/campaigns.py) takes the campaign's caravans, from
several counties, and lies within its period.

Solving survives the death of its process. A queued or running plan holds a lease
(`lease_until`, `lease_holder`): a solve claims the plan atomically (only one process wins)
and renews the lease while it runs. When the lease runs out, the process solving it died (or
its pool worker did): a service that starts (`recover`, from Context.start) or reads the plan
(`get_plan`) claims it and solves it again, up to MAX_ATTEMPTS attempts, after which the plan
fails with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue as queue_module
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

import msgspec
import structlog
from bson import ObjectId
from pymongo import ReturnDocument

from server import routing
from server.clock import SHANGHAI
from server.domain import activities, campaigns, caravans, events, orgs, sites
from server.domain.errors import Conflict, InvalidRequest, NotFound
from server.domain.ids import fetch, parse_id
from server.domain.paging import page_by_id

log = structlog.get_logger(__name__)

HHMM = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
Weekday = Annotated[int, msgspec.Meta(ge=1, le=7)]
MAX_DAYS = 62
POLL_S = 0.25
SITE_BATCH = 8
REASON_ALREADY_SCHEDULED = "already_scheduled"
SOLVING = ("queued", "running")
LEASE = timedelta(seconds=30)
HEARTBEAT_S = 5.0
"""A solve renews its lease at least this often (and with every progress report)."""
MAX_ATTEMPTS = 3
"""Solves of one plan that may start before it fails: a plan that kills its solver every time
must not keep the service busy for ever."""
KIND_WORD = {
    "school": "校园",
    "village": "乡村",
    "community": "社区",
    "base": "基地",
    "other": "基层",
}

_tasks: dict[ObjectId, asyncio.Task] = {}
"""The solves running in this process, by plan id."""


class NewPlan(msgspec.Struct, forbid_unknown_fields=True):
    """`start_date` and `end_date` are required, except for a campaign's plan: they then
    default to the campaign's period and must lie within it."""

    org_id: str
    start_date: date | None = None
    end_date: date | None = None
    campaign_id: str | None = None
    caravan_ids: Annotated[list[str], msgspec.Meta(min_length=1, max_length=200)] | None = None
    request_ids: Annotated[list[str], msgspec.Meta(max_length=5000)] | None = None
    time_limit_s: Annotated[int, msgspec.Meta(ge=1, le=300)] = 30
    weekdays: Annotated[list[Weekday], msgspec.Meta(min_length=1, max_length=7)] = msgspec.field(
        default_factory=lambda: [1, 2, 3, 4, 5]
    )
    duty_start: HHMM = "07:00"
    duty_end: HHMM = "19:00"
    max_duty_h: Annotated[float, msgspec.Meta(gt=0, le=16)] = 9.0


class NewPin(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str
    caravan_id: str
    date: date


class Exclusion(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str


class Queued(msgspec.Struct):
    id: str
    status: str


class StopOut(msgspec.Struct):
    site_id: str
    request_id: str
    arrive_at: datetime
    start_at: datetime
    depart_at: datetime


class RouteOut(msgspec.Struct):
    """One caravan-day. It leaves `depot_id` and ends at `end_depot_id`: today always the same
    depot, as every duty day is a round trip. Multi-day tours with overnight stops at another
    depot (a later step) fit as days that end where the next one starts; the solver would then
    take each caravan-day's end depot too (PyVRP vehicle types have both)."""

    caravan_id: str
    date: str
    depot_id: str
    end_depot_id: str
    leave_at: datetime
    return_at: datetime
    stops: list[StopOut]
    distance_km: float
    duration_min: float


class UnassignedOut(msgspec.Struct):
    request_id: str
    reason: str
    detail: str = ""


class PinOut(msgspec.Struct):
    request_id: str
    caravan_id: str
    date: str


class PublishedVisit(msgspec.Struct):
    request_id: str
    activity_id: str


class PlanOut(msgspec.Struct):
    id: str
    org_id: str
    campaign_id: str | None
    status: str
    progress: float
    best_cost: int | None
    start_date: str
    end_date: str
    time_limit_s: int
    caravan_ids: list[str]
    request_ids: list[str]
    routes: list[RouteOut]
    unassigned: list[UnassignedOut]
    total_distance_km: float
    pins: list[PinOut]
    excluded: list[str]
    runs: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    published_at: datetime | None
    published: list[PublishedVisit]


class PlanSummary(msgspec.Struct):
    id: str
    org_id: str
    campaign_id: str | None
    status: str
    progress: float
    start_date: str
    end_date: str
    caravans: int
    requests: int
    routes: int
    unassigned: int
    total_distance_km: float
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    published_at: datetime | None


class PlanPage(msgspec.Struct):
    items: list[PlanSummary]
    next_cursor: str | None


class PublishOut(msgspec.Struct):
    status: str
    published: list[PublishedVisit]
    skipped: list[UnassignedOut]


# -- creating and reading ---------------------------------------------------------------------


def working_days(plan: dict) -> list[str]:
    start = date.fromisoformat(plan["start_date"])
    end = date.fromisoformat(plan["end_date"])
    weekdays = set(plan["weekdays"])
    span = (end - start).days + 1
    days = (start + timedelta(days=i) for i in range(span))
    return [d.isoformat() for d in days if d.isoweekday() in weekdays]


async def create_plan(ctx, new: NewPlan, *, created_by: ObjectId, start: bool = True) -> ObjectId:
    org_id = parse_id(new.org_id, "org_id")
    await orgs.get_org(ctx, org_id)
    caravan_ids = [parse_id(c, "caravan_ids") for c in new.caravan_ids] if new.caravan_ids else None
    campaign_id = None
    if new.campaign_id is not None:
        campaign = await campaigns.get_campaign_doc(ctx, new.campaign_id)
        first, last, caravan_ids = _within_campaign(new, org_id, campaign, caravan_ids)
        campaign_id = campaign["_id"]
    elif new.start_date is None:
        raise InvalidRequest("请填写计划的开始日期", field="start_date")
    elif new.end_date is None:
        raise InvalidRequest("请填写计划的结束日期", field="end_date")
    else:
        first, last = new.start_date, new.end_date
    if last < first:
        raise InvalidRequest("结束日期不能早于开始日期", field="end_date")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidRequest(f"计划期不能超过 {MAX_DAYS} 天", field="end_date")
    if sites.minutes(new.duty_start) >= sites.minutes(new.duty_end):
        raise InvalidRequest("出车时段的开始须早于结束", field="duty_start")
    request_ids = (
        [parse_id(r, "request_ids") for r in new.request_ids]
        if new.request_ids is not None
        else None
    )
    fleet = await caravans.caravans_for_plan(ctx, org_id, caravan_ids)
    if campaign_id is None:
        # A caravan lent to a campaign is the campaign's on its days.
        fleet = await campaigns.outside_campaigns(ctx, fleet, first, last, named=bool(caravan_ids))
    if not fleet:
        raise InvalidRequest("该组织在计划期内没有可用的大篷车", field="caravan_ids")
    requests = await caravans.open_requests(ctx, org_id, first, last, request_ids)
    now = ctx.clock.now()
    doc = {
        "_id": ObjectId(),
        "org_id": org_id,
        "campaign_id": campaign_id,
        "start_date": first.isoformat(),
        "end_date": last.isoformat(),
        "weekdays": sorted(set(new.weekdays)),
        "duty_start": new.duty_start,
        "duty_end": new.duty_end,
        "max_duty_h": new.max_duty_h,
        "time_limit_s": new.time_limit_s,
        "caravan_ids": [c["_id"] for c in fleet],
        "request_ids": [r["_id"] for r in requests],
        "pins": [],
        "excluded": [],
        "status": "queued",
        # Until this process's solve claims it; a plan whose creator died is recovered after.
        "lease_holder": None,
        "lease_until": now + LEASE,
        "attempts": 0,
        "progress": 0.0,
        "best_cost": None,
        "routes": [],
        "unassigned": [],
        "total_distance_km": 0.0,
        "runs": 0,
        "error": None,
        "created_by": created_by,
        "created_at": now,
        "started_at": None,
        "finished_at": None,
        "published_at": None,
        "published": [],
    }
    if not working_days(doc):
        raise InvalidRequest("计划期内没有工作日", field="weekdays")
    await ctx.db["plans"].insert_one(doc)
    if start:
        start_solving(ctx, doc["_id"])
    return doc["_id"]


def _within_campaign(
    new: NewPlan, org_id: ObjectId, campaign: dict, caravan_ids: list[ObjectId] | None
) -> tuple[date, date, list[ObjectId]]:
    """The period and caravans of a campaign's plan: the campaign's, or part of them."""
    if campaign["org_id"] != org_id:
        raise InvalidRequest("该巡回行动不属于计划的组织", field="campaign_id")
    opens = date.fromisoformat(campaign["start_date"])
    closes = date.fromisoformat(campaign["end_date"])
    first, last = new.start_date or opens, new.end_date or closes
    period = f"巡回行动期间（{campaign['start_date']} 至 {campaign['end_date']}）"
    if not opens <= first <= closes:
        raise InvalidRequest(f"开始日期须在{period}之内", field="start_date")
    if not opens <= last <= closes:
        raise InvalidRequest(f"结束日期须在{period}之内", field="end_date")
    if caravan_ids is None:
        return first, last, campaign["caravan_ids"]
    if not set(caravan_ids) <= set(campaign["caravan_ids"]):
        raise InvalidRequest("部分大篷车不在该巡回行动中", field="caravan_ids")
    return first, last, caravan_ids


async def get_plan_doc(ctx, plan_id) -> dict:
    return await fetch(ctx.db["plans"], plan_id, "plan_id", "计划不存在")


async def plan_org(ctx, plan_id) -> ObjectId:
    doc = await ctx.db["plans"].find_one({"_id": parse_id(plan_id, "plan_id")}, {"org_id": 1})
    if doc is None:
        raise NotFound("计划不存在", field="plan_id")
    return doc["org_id"]


def _plan_out(doc: dict) -> PlanOut:
    return PlanOut(
        id=str(doc["_id"]),
        org_id=str(doc["org_id"]),
        campaign_id=str(doc["campaign_id"]) if doc.get("campaign_id") else None,
        status=doc["status"],
        progress=round(doc.get("progress", 0.0), 3),
        best_cost=None if doc.get("best_cost") is None else int(doc["best_cost"]),
        start_date=doc["start_date"],
        end_date=doc["end_date"],
        time_limit_s=doc["time_limit_s"],
        caravan_ids=[str(c) for c in doc["caravan_ids"]],
        request_ids=[str(r) for r in doc["request_ids"]],
        routes=[
            RouteOut(
                caravan_id=str(r["caravan_id"]),
                date=r["date"],
                depot_id=str(r["depot_id"]),
                end_depot_id=str(r["end_depot_id"]),
                leave_at=r["leave_at"],
                return_at=r["return_at"],
                stops=[
                    StopOut(
                        site_id=str(s["site_id"]),
                        request_id=str(s["request_id"]),
                        arrive_at=s["arrive_at"],
                        start_at=s["start_at"],
                        depart_at=s["depart_at"],
                    )
                    for s in r["stops"]
                ],
                distance_km=r["distance_km"],
                duration_min=r["duration_min"],
            )
            for r in doc["routes"]
        ],
        unassigned=[
            UnassignedOut(request_id=str(u["request_id"]), reason=u["reason"], detail=u["detail"])
            for u in doc["unassigned"]
        ],
        total_distance_km=doc["total_distance_km"],
        pins=[
            PinOut(request_id=str(p["request_id"]), caravan_id=str(p["caravan_id"]), date=p["date"])
            for p in doc["pins"]
        ],
        excluded=[str(r) for r in doc["excluded"]],
        runs=doc["runs"],
        error=doc.get("error"),
        created_at=doc["created_at"],
        started_at=doc.get("started_at"),
        finished_at=doc.get("finished_at"),
        published_at=doc.get("published_at"),
        published=[
            PublishedVisit(request_id=str(p["request_id"]), activity_id=str(p["activity_id"]))
            for p in doc.get("published", [])
        ],
    )


async def get_plan(ctx, plan_id) -> PlanOut:
    doc = await get_plan_doc(ctx, plan_id)
    if _stale(ctx, doc) and doc["_id"] not in _tasks:
        # Its solver's process died: the reader's process takes it over (if it wins the claim).
        start_solving(ctx, doc["_id"])
    return _plan_out(doc)


async def list_plans(ctx, org_ids: list[ObjectId], cursor: str | None, limit: int) -> PlanPage:
    """The plans of these organisations, newest first, without their routes."""
    docs, following = await page_by_id(
        ctx.db["plans"],
        {"org_id": {"$in": org_ids}},
        cursor,
        limit,
        newest_first=True,
        projection={"routes.stops": 0, "pins": 0, "excluded": 0, "published": 0},
    )
    items = [
        PlanSummary(
            id=str(d["_id"]),
            org_id=str(d["org_id"]),
            campaign_id=str(d["campaign_id"]) if d.get("campaign_id") else None,
            status=d["status"],
            progress=round(d.get("progress", 0.0), 3),
            start_date=d["start_date"],
            end_date=d["end_date"],
            caravans=len(d["caravan_ids"]),
            requests=len(d["request_ids"]),
            routes=len(d["routes"]),
            unassigned=len(d["unassigned"]),
            total_distance_km=d["total_distance_km"],
            error=d.get("error"),
            created_at=d["created_at"],
            finished_at=d.get("finished_at"),
            published_at=d.get("published_at"),
        )
        for d in docs
    ]
    return PlanPage(items=items, next_cursor=following)


# -- pins, exclusions, re-planning ------------------------------------------------------------


def _editable(plan: dict) -> None:
    if plan.get("published_at") or plan.get("publishing_until"):
        raise Conflict("计划已发布，不能再修改", code="plan_published")


async def pin(ctx, plan_id, new: NewPin) -> PlanOut:
    plan = await get_plan_doc(ctx, plan_id)
    _editable(plan)
    request_id = parse_id(new.request_id, "request_id")
    caravan_id = parse_id(new.caravan_id, "caravan_id")
    if request_id not in plan["request_ids"]:
        raise InvalidRequest("该走访申请不在本计划中", field="request_id")
    if caravan_id not in plan["caravan_ids"]:
        raise InvalidRequest("该大篷车不在本计划中", field="caravan_id")
    day = new.date.isoformat()
    if day not in working_days(plan):
        raise InvalidRequest("该日期不是计划期内的工作日", field="date")
    pins = [p for p in plan["pins"] if p["request_id"] != request_id]
    pins.append({"request_id": request_id, "caravan_id": caravan_id, "date": day})
    excluded = [r for r in plan["excluded"] if r != request_id]
    return await _set_edits(ctx, plan, pins, excluded)


async def unpin(ctx, plan_id, request_id) -> PlanOut:
    plan = await get_plan_doc(ctx, plan_id)
    _editable(plan)
    request_id = parse_id(request_id, "request_id", missing_is_not_found=True)
    pins = [p for p in plan["pins"] if p["request_id"] != request_id]
    return await _set_edits(ctx, plan, pins, plan["excluded"])


async def exclude(ctx, plan_id, request_id) -> PlanOut:
    plan = await get_plan_doc(ctx, plan_id)
    _editable(plan)
    request_id = parse_id(request_id, "request_id")
    if request_id not in plan["request_ids"]:
        raise InvalidRequest("该走访申请不在本计划中", field="request_id")
    pins = [p for p in plan["pins"] if p["request_id"] != request_id]
    excluded = [*(r for r in plan["excluded"] if r != request_id), request_id]
    return await _set_edits(ctx, plan, pins, excluded)


async def _set_edits(ctx, plan: dict, pins: list[dict], excluded: list[ObjectId]) -> PlanOut:
    doc = await ctx.db["plans"].find_one_and_update(
        {"_id": plan["_id"], "published_at": None},
        {"$set": {"pins": pins, "excluded": excluded}},
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        raise Conflict("计划已发布，不能再修改", code="plan_published")
    return _plan_out(doc)


async def replan(ctx, plan_id) -> Queued:
    plan = await get_plan_doc(ctx, plan_id)
    _editable(plan)
    doc = await ctx.db["plans"].find_one_and_update(
        {"_id": plan["_id"], "status": {"$in": ["done", "failed"]}, "published_at": None},
        {
            "$set": {
                "status": "queued",
                "progress": 0.0,
                "best_cost": None,
                "error": None,
                "lease_holder": None,
                "lease_until": ctx.clock.now() + LEASE,
                "attempts": 0,
            }
        },
    )
    if doc is None:
        raise Conflict("计划正在求解，请等它结束再重新规划", code="plan_running")
    start_solving(ctx, plan["_id"])
    return Queued(id=str(plan["_id"]), status="queued")


# -- solving in the process pool --------------------------------------------------------------


def start_solving(ctx, plan_id: ObjectId) -> None:
    """Starts the background solve of a plan in this process (its claim decides whether this
    process solves it)."""
    task = asyncio.get_running_loop().create_task(_run(ctx, plan_id), name=f"plan-{plan_id}")
    _tasks[plan_id] = task

    def forget(done: asyncio.Task) -> None:
        if _tasks.get(plan_id) is done:
            del _tasks[plan_id]

    task.add_done_callback(forget)


def running() -> list[ObjectId]:
    return list(_tasks)


async def wait(plan_id, timeout_s: float | None = None) -> None:
    """Until this process's solve of the plan (if any) has ended."""
    task = _tasks.get(parse_id(plan_id, "plan_id"))
    if task is not None:
        await asyncio.wait_for(asyncio.shield(task), timeout_s)


async def drain(*, cancel: bool = False) -> None:
    """Waits for (or cancels) every solve of this process; for shutdown and tests."""
    tasks = list(_tasks.values())
    if cancel:
        for task in tasks:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


SOLVER_NICENESS = 19
"""Solves yield the CPU to the service and its database: a plan may take a little longer, a
request never waits for a plan."""


def _solve_in_worker(problem: routing.PlanProblem, on_progress) -> routing.PlanResult:
    """Runs in a process-pool worker, at a lower priority than the service."""
    with contextlib.suppress(OSError):
        current = os.nice(0)
        if current < SOLVER_NICENESS:
            os.nice(SOLVER_NICENESS - current)
    return routing.solve_plan(problem, on_progress)


def _start_manager():
    manager = multiprocessing.Manager()
    return manager, manager.Queue()


def _drain_queue(progress) -> list[tuple[float, int | None]]:
    updates = []
    while True:
        try:
            updates.append(progress.get_nowait())
        except queue_module.Empty:
            return updates


async def _run(ctx, plan_id: ObjectId) -> None:
    """Solves the plan if this process wins its claim; again, as a new attempt, when a pool
    worker died under it."""
    while await _attempt(ctx, plan_id):
        pass


async def _attempt(ctx, plan_id: ObjectId) -> bool:
    """One solve of the plan; True when it should be tried again."""
    plans = ctx.db["plans"]
    token = str(ObjectId())
    pool = ctx.process_pool
    manager = None
    try:
        plan = await _claim(ctx, plan_id, token)
        if plan is None:
            return False
        problem, days, gone = await _build_problem(ctx, plan)
        manager, progress = await ctx.run_blocking(_start_manager)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            pool, _solve_in_worker, problem, routing.ProgressToQueue(progress)
        )
        renewed = loop.time()
        while True:
            done, _ = await asyncio.wait({future}, timeout=POLL_S)
            if done:
                break
            report = {}
            if updates := await ctx.run_blocking(_drain_queue, progress):
                fraction, cost = updates[-1]
                report = {"progress": min(fraction, 0.999), "best_cost": cost}
            if report or loop.time() - renewed >= HEARTBEAT_S:
                if not await _renew(ctx, plan_id, token, report):
                    # This process stalled past its lease and another took the plan over.
                    log.warning("plan_taken_over", plan_id=str(plan_id))
                    return False
                renewed = loop.time()
        result: routing.PlanResult = future.result()
        written = await plans.update_one(
            {"_id": plan_id, "lease_holder": token},
            {"$set": _result_fields(ctx, result, days, gone)},
        )
        log.info(
            "plan_done" if written.matched_count else "plan_taken_over",
            plan_id=str(plan_id),
            routes=len(result.routes),
            unassigned=len(result.unassigned),
            seconds=round(result.runtime_s, 2),
        )
        return False
    except BrokenProcessPool:
        # A worker died (killed, out of memory) and took the pool with it: a new pool solves
        # the plan again.
        log.warning("plan_worker_died", plan_id=str(plan_id))
        ctx.discard_process_pool(pool)
        await _hand_back(ctx, plan_id, token)
        return True
    except asyncio.CancelledError:
        # The service is stopping: another process, or this one's next start, solves it; a
        # stop is no failed attempt.
        with contextlib.suppress(Exception):
            await asyncio.shield(_hand_back(ctx, plan_id, token, failed_attempt=False))
        raise
    except Exception as exc:
        log.exception("plan_failed", plan_id=str(plan_id))
        with contextlib.suppress(Exception):
            await _fail(ctx, plan_id, token, f"求解失败：{type(exc).__name__}: {exc}")
        return False
    finally:
        if manager is not None:
            with contextlib.suppress(Exception):
                await ctx.run_blocking(manager.shutdown)


def _claimable(now: datetime) -> dict:
    """A plan queued here and not yet taken, or one whose solver stopped renewing its lease."""
    return {
        "$or": [
            {"status": "queued", "lease_holder": None},
            {"status": {"$in": list(SOLVING)}, "lease_until": {"$lt": now}},
        ]
    }


def _stale(ctx, doc: dict) -> bool:
    return doc["status"] in SOLVING and doc["lease_until"] < ctx.clock.now()


async def _claim(ctx, plan_id: ObjectId, token: str) -> dict | None:
    """Takes the plan for one solve, atomically: of several processes, one wins. The plan as it
    was before the claim (its `runs` seed the search), or None when it is not this process's
    to solve: taken by another, finished, or failed here for running out of attempts."""
    now = ctx.clock.now()
    plans = ctx.db["plans"]
    plan = await plans.find_one_and_update(
        {"_id": plan_id, "attempts": {"$lt": MAX_ATTEMPTS}, **_claimable(now)},
        {
            "$set": {
                "status": "running",
                "lease_holder": token,
                "lease_until": now + LEASE,
                "started_at": now,
                "progress": 0.0,
            },
            "$inc": {"runs": 1, "attempts": 1},
        },
    )
    if plan is None:
        given_up = await plans.update_one(
            {"_id": plan_id, "attempts": {"$gte": MAX_ATTEMPTS}, **_claimable(now)},
            {
                "$set": {
                    "status": "failed",
                    "error": f"求解进程已中途退出 {MAX_ATTEMPTS} 次，不再重试；请检查后重新规划",
                    "finished_at": now,
                }
            },
        )
        if given_up.modified_count:
            log.error("plan_out_of_attempts", plan_id=str(plan_id))
    return plan


async def _renew(ctx, plan_id: ObjectId, token: str, fields: dict) -> bool:
    """Extends the lease (with the latest progress); False when the plan is no longer ours."""
    result = await ctx.db["plans"].update_one(
        {"_id": plan_id, "lease_holder": token},
        {"$set": {**fields, "lease_until": ctx.clock.now() + LEASE}},
    )
    return result.matched_count == 1


async def _hand_back(ctx, plan_id: ObjectId, token: str, *, failed_attempt: bool = True) -> None:
    """Gives the plan up for another solve, here or in another process."""
    now = ctx.clock.now()
    update: dict = {"$set": {"status": "queued", "lease_holder": None, "lease_until": now}}
    if not failed_attempt:
        update["$inc"] = {"attempts": -1}
    await ctx.db["plans"].update_one({"_id": plan_id, "lease_holder": token}, update)


async def _fail(ctx, plan_id: ObjectId, token: str, message: str) -> None:
    await ctx.db["plans"].update_one(
        {"_id": plan_id, "lease_holder": token},
        {"$set": {"status": "failed", "error": message, "finished_at": ctx.clock.now()}},
    )


async def recover(ctx) -> None:
    """Takes over the plans whose solver's process died (their lease ran out): each is solved
    again here, unless another process claims it first. Called when a service starts."""
    cursor = ctx.db["plans"].find(
        {"status": {"$in": list(SOLVING)}, "lease_until": {"$lt": ctx.clock.now()}}, {"_id": 1}
    )
    stale = [doc["_id"] async for doc in cursor]
    for plan_id in stale:
        start_solving(ctx, plan_id)
    if stale:
        log.info("plans_recovered", plans=[str(p) for p in stale])


async def _build_problem(ctx, plan: dict) -> tuple[routing.PlanProblem, list[str], list]:
    """The routing problem of the plan as it stands; also its days and the requests that were
    scheduled elsewhere since the plan was made (left out, reported)."""
    days = working_days(plan)
    index = {d: i for i, d in enumerate(days)}
    fleet = await caravans.caravans_by_id(ctx, plan["caravan_ids"])
    depots = await caravans.depots_by_id(ctx, list({c["depot_id"] for c in fleet.values()}))
    stored = await caravans.requests_by_id(ctx, plan["request_ids"])
    requests = [stored[r] for r in plan["request_ids"] if r in stored]
    gone = [r["_id"] for r in requests if r["status"] != "open"]
    requests = [r for r in requests if r["status"] == "open"]
    site_ids = list({r["site_id"] for r in requests})
    site_of: dict[ObjectId, dict] = {}
    for i in range(0, len(site_ids), SITE_BATCH):  # a few at a time: leave the pool to requests
        batch = site_ids[i : i + SITE_BATCH]
        for doc in await asyncio.gather(*(sites.get_site_doc(ctx, s) for s in batch)):
            site_of[doc["_id"]] = doc

    duty_start = sites.minutes(plan["duty_start"]) * 60
    duty_end = sites.minutes(plan["duty_end"]) * 60
    max_duty = int(plan["max_duty_h"] * 3600)
    caravan_days = [
        routing.CaravanDay(
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
            routing.Request(
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
    open_ids = {r["_id"] for r in requests}
    pins = tuple(
        routing.Pin(
            request_id=str(p["request_id"]), caravan_id=str(p["caravan_id"]), day=index[p["date"]]
        )
        for p in plan["pins"]
        if p["request_id"] in open_ids and p["date"] in index
    )
    problem = routing.PlanProblem(
        depots=tuple(
            routing.Depot(
                depot_id=str(d["_id"]),
                lng=d["location"]["coordinates"][0],
                lat=d["location"]["coordinates"][1],
            )
            for d in depots.values()
        ),
        caravan_days=tuple(caravan_days),
        requests=tuple(problem_requests),
        pins=pins,
        excluded=tuple(str(r) for r in plan["excluded"] if r in open_ids),
        time_limit_s=float(plan["time_limit_s"]),
        seed=plan.get("runs", 0),
    )
    return problem, days, gone


def _at(day: str, seconds: int) -> datetime:
    midnight = datetime.combine(date.fromisoformat(day), time(), tzinfo=SHANGHAI)
    return (midnight + timedelta(seconds=seconds)).astimezone(UTC)


def _result_fields(ctx, result: routing.PlanResult, days: list[str], gone: list) -> dict:
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
    unassigned = [
        {"request_id": ObjectId(u.request_id), "reason": u.reason, "detail": u.detail}
        for u in result.unassigned
    ] + [
        {"request_id": r, "reason": REASON_ALREADY_SCHEDULED, "detail": "scheduled by another plan"}
        for r in gone
    ]
    return {
        "status": "done",
        "progress": 1.0,
        "best_cost": result.cost,
        "feasible": result.feasible,
        "routes": routes,
        "unassigned": unassigned,
        "total_distance_km": round(result.distance_m / 1000, 1),
        "runtime_s": round(result.runtime_s, 3),
        "finished_at": ctx.clock.now(),
    }


# -- publishing -------------------------------------------------------------------------------


async def publish(ctx, plan_id, *, by: ObjectId, publisher_openid: str) -> PublishOut:
    """Every planned visit becomes a published activity at its site; once per plan."""
    plan = await get_plan_doc(ctx, plan_id)
    if plan.get("published_at"):
        return _published_out(plan)
    if plan["status"] != "done":
        raise Conflict("计划尚未求解完成，不能发布", code="plan_not_done")
    now = ctx.clock.now()
    claimed = await ctx.db["plans"].find_one_and_update(
        {
            "_id": plan["_id"],
            "status": "done",
            "published_at": None,
            "$or": [{"publishing_until": None}, {"publishing_until": {"$lt": now}}],
        },
        {"$set": {"publishing_until": now + timedelta(minutes=5)}},
        return_document=ReturnDocument.AFTER,
    )
    if claimed is None:
        current = await get_plan_doc(ctx, plan_id)
        if current.get("published_at"):
            return _published_out(current)
        raise Conflict("计划正在发布或正在重新规划", code="plan_busy")
    published, skipped = [], []
    try:
        fleet = await caravans.caravans_by_id(ctx, claimed["caravan_ids"])
        for route in claimed["routes"]:
            caravan = fleet[route["caravan_id"]]
            for stop in route["stops"]:
                activity_id = await _publish_visit(
                    ctx, claimed, caravan, route, stop, by, publisher_openid
                )
                if activity_id is None:
                    skipped.append(
                        {
                            "request_id": stop["request_id"],
                            "reason": REASON_ALREADY_SCHEDULED,
                            "detail": "已由其他计划排期",
                        }
                    )
                else:
                    published.append({"request_id": stop["request_id"], "activity_id": activity_id})
    except BaseException:
        await ctx.db["plans"].update_one({"_id": plan["_id"]}, {"$set": {"publishing_until": None}})
        raise
    doc = await ctx.db["plans"].find_one_and_update(
        {"_id": plan["_id"]},
        {
            "$set": {
                "published_at": ctx.clock.now(),
                "published_by": by,
                "published": published,
                "skipped": skipped,
                "publishing_until": None,
            }
        },
        return_document=ReturnDocument.AFTER,
    )
    return _published_out(doc)


async def _publish_visit(
    ctx, plan: dict, caravan: dict, route: dict, stop: dict, by, openid
) -> ObjectId | None:
    request = await caravans.claim_for_publish(ctx, stop["request_id"], plan["_id"])
    if request is None:
        current = await caravans.get_request_doc(ctx, stop["request_id"])
        if current.get("plan_id") == plan["_id"] and current.get("activity_id"):
            return current["activity_id"]  # published by an earlier, interrupted attempt
        return None
    activity_id = request.get("activity_id")
    if activity_id is None:
        site = await sites.get_site_doc(ctx, stop["site_id"])
        word = KIND_WORD.get(site["kind"], "基层")
        activity_id = await activities.create_activity(
            ctx,
            activities.NewActivity(
                title=f"科普大篷车进{word}·{site['name']}"[:60],
                description=(
                    f"{caravan['name']}（{caravan['plate']}）到{site['name']}开展科普大篷车活动，"
                    f"约 {request['duration_min']} 分钟。招募随车志愿者 {caravan['crew_size']} 名。"
                ),
                org_id=str(caravan["org_id"]),
                site_id=str(site["_id"]),
                starts_at=stop["start_at"],
                ends_at=stop["depart_at"],
                capacity=caravan["crew_size"],
                tags=[activities.CARAVAN_TAG],
            ),
            created_by=by,
        )
        await caravans.record_activity(ctx, request["_id"], activity_id)
    await activities.publish(ctx, activity_id, publisher_openid=openid)
    await caravans.mark_scheduled(
        ctx, request["_id"], caravan_id=caravan["_id"], day=route["date"], activity_id=activity_id
    )
    await events.emit(
        ctx,
        events.VISIT_SCHEDULED,
        request_id=request["_id"],
        site_id=stop["site_id"],
        activity_id=activity_id,
        caravan_id=caravan["_id"],
        plan_id=plan["_id"],
    )
    return activity_id


def _published_out(doc: dict) -> PublishOut:
    return PublishOut(
        status="published",
        published=[
            PublishedVisit(request_id=str(p["request_id"]), activity_id=str(p["activity_id"]))
            for p in doc.get("published", [])
        ],
        skipped=[
            UnassignedOut(request_id=str(s["request_id"]), reason=s["reason"], detail=s["detail"])
            for s in doc.get("skipped", [])
        ],
    )
