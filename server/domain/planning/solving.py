"""Solving plans: the registry of this process's solves, the plan's lease, the process pool,
and the recovery of plans whose solver died.

A solve is a background asyncio task, one per plan, kept by the context's :class:`Solves`
(`ctx.solves`). It claims the plan's lease (`lease_holder`, `lease_until` on the plan
document, a :class:`server.db.leases.Lease`) atomically, so that of several processes only one
solves it, runs the solver in the context's process pool (`ctx.workers`), reads its progress
from a manager queue and writes it to the plan while renewing the lease, then stores the routes.
Every search polls a stop event of its own, set when the solve ends however it ends, so a
cancelled solve frees its worker at once.

When the machine has a second core and this process solves nothing else, a second search with
another seed runs beside the first in the pool (both at the lowest CPU priority, see
:mod:`server.vrp.worker`) and the better plan is kept. It is told to stop as soon as another
solve starts in this process, so the second worker is free for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue as queue_module
from collections.abc import Coroutine
from concurrent.futures.process import BrokenProcessPool

import msgspec
import structlog
from bson import ObjectId

from server import vrp
from server.db.leases import Lease
from server.domain.ids import parse_id
from server.domain.planning.problem import build_problem, result_fields
from server.vrp import worker

log = structlog.get_logger(__name__)

POLL_S = 0.25
SOLVING = ("queued", "running")
LEASE = Lease(seconds=30)
HEARTBEAT_S = 5.0
"""A solve renews its lease at least this often (and with every progress report)."""
MAX_ATTEMPTS = 3
"""Solves of one plan that may start before it fails: a plan that kills its solver every time
must not keep the service busy for ever."""


class Solves:
    """The solves running in this process, by plan id: one registry per context
    (`ctx.solves`), drained when the context closes."""

    def __init__(self) -> None:
        self._tasks: dict[ObjectId, asyncio.Task] = {}

    def start(self, plan_id: ObjectId, solve: Coroutine) -> None:
        task = asyncio.get_running_loop().create_task(solve, name=f"plan-{plan_id}")
        self._tasks[plan_id] = task

        def forget(done: asyncio.Task) -> None:
            if self._tasks.get(plan_id) is done:
                del self._tasks[plan_id]

        task.add_done_callback(forget)

    def __contains__(self, plan_id: ObjectId) -> bool:
        return plan_id in self._tasks

    def running(self) -> list[ObjectId]:
        return list(self._tasks)

    async def wait(self, plan_id, timeout_s: float | None = None) -> None:
        """Until this process's solve of the plan (if any) has ended."""
        task = self._tasks.get(parse_id(plan_id, "plan_id"))
        if task is not None:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)

    async def drain(self, *, cancel: bool = False) -> None:
        """Waits for (or cancels) every solve of this process; for shutdown and tests."""
        tasks = list(self._tasks.values())
        if cancel:
            for task in tasks:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def start_solving(ctx, plan_id: ObjectId) -> None:
    """Starts the background solve of a plan in this process (its claim decides whether this
    process solves it)."""
    ctx.solves.start(plan_id, _run(ctx, plan_id))


def _searches(ctx, plan_id: ObjectId) -> int:
    """Two searches side by side when the machine has two cores and this process solves
    nothing else; one otherwise."""
    return 2 if (os.cpu_count() or 1) >= 2 and ctx.solves.running() == [plan_id] else 1


def _set_all(events) -> None:
    for event in events:
        event.set()


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
    pool = ctx.workers.pool
    stops = []
    try:
        plan = await _claim(ctx, plan_id, token)
        if plan is None:
            return False
        problem, days, gone = await build_problem(ctx, plan)
        # The limit used: the scaled default is computed from the plan as it stands now.
        limit = {"time_limit_s": int(problem.time_limit_s)}
        if not await LEASE.renew(plans, {"_id": plan_id}, token, ctx.clock.now(), limit):
            return False
        progress = vrp.ProgressToQueue(await ctx.run_blocking(ctx.workers.queue))
        problems = [problem]
        if _searches(ctx, plan_id) > 1:
            problems.append(msgspec.structs.replace(problem, seed=problem.seed + vrp.SIDE_SEED))
        for _ in problems:
            stops.append(await ctx.run_blocking(ctx.workers.event))
        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(
                pool, worker.solve_in_worker, search, progress, vrp.StopWhenSet(stop)
            )
            for search, stop in zip(problems, stops, strict=True)
        ]
        searches = len(futures)
        renewed = loop.time()
        best_cost = None
        side_stopped = False
        while True:
            done, _ = await asyncio.wait(futures, timeout=POLL_S)
            if len(done) == len(futures):
                break
            if searches > 1 and not side_stopped and len(ctx.solves.running()) > 1:
                # Another plan wants the second worker.
                await ctx.run_blocking(stops[1].set)
                side_stopped = True
            report = {}
            if updates := await ctx.run_blocking(_drain_queue, progress.queue):
                costs = [c for _, c in updates if c is not None]
                if costs:
                    best_cost = min(costs) if best_cost is None else min(best_cost, *costs)
                fraction = max(f for f, _ in updates)
                report = {"progress": min(fraction, 0.999), "best_cost": best_cost}
            if report or loop.time() - renewed >= HEARTBEAT_S:
                if not await LEASE.renew(plans, {"_id": plan_id}, token, ctx.clock.now(), report):
                    # This process stalled past its lease and another took the plan over.
                    log.warning("plan_taken_over", plan_id=str(plan_id))
                    return False
                renewed = loop.time()
        result = vrp.best_plan([f.result() for f in futures])
        written = await plans.update_one(
            {"_id": plan_id, **LEASE.held_by(token)},
            {"$set": result_fields(ctx, plan, result, days, gone, searches)},
        )
        log.info(
            "plan_done" if written.matched_count else "plan_taken_over",
            plan_id=str(plan_id),
            routes=len(result.routes),
            unassigned=len(result.unassigned),
            seconds=round(result.runtime_s, 2),
            iterations=result.iterations,
            searches=searches,
        )
        return False
    except BrokenProcessPool:
        # A worker died (killed, out of memory) and took the pool with it: a new pool solves
        # the plan again.
        log.warning("plan_worker_died", plan_id=str(plan_id))
        ctx.workers.discard_pool(pool)
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
        if stops:
            with contextlib.suppress(Exception):
                await asyncio.shield(ctx.run_blocking(_set_all, stops))


def is_stale(ctx, doc: dict) -> bool:
    """Whether the plan's solver died: it is still to be solved and its lease ran out."""
    return doc["status"] in SOLVING and doc["lease_until"] < ctx.clock.now()


async def _claim(ctx, plan_id: ObjectId, token: str) -> dict | None:
    """Takes the plan for one solve, atomically: of several processes, one wins. The plan as
    claimed (its `runs`, this solve counted, seed the search), or None when it is not this
    process's to solve: taken by another, finished, or failed here for running out of attempts.

    A plan still to be solved is claimable while its lease is free: queued here and not yet
    taken (no holder), or its solver stopped renewing the lease (run out)."""
    now = ctx.clock.now()
    plans = ctx.db["plans"]
    to_solve = {"_id": plan_id, "status": {"$in": list(SOLVING)}}
    claimed = await LEASE.acquire(
        plans,
        {**to_solve, "attempts": {"$lt": MAX_ATTEMPTS}},
        token,
        now,
        set_fields={"status": "running", "started_at": now, "progress": 0.0},
        inc={"runs": 1, "attempts": 1},
    )
    if claimed:
        # None if its lease ran out in between and another process took it over.
        return await plans.find_one({"_id": plan_id, **LEASE.held_by(token)})
    given_up = await LEASE.update_free(
        plans,
        {**to_solve, "attempts": {"$gte": MAX_ATTEMPTS}},
        {
            "$set": {
                "status": "failed",
                "error": f"求解进程已中途退出 {MAX_ATTEMPTS} 次，不再重试；请检查后重新规划",
                "finished_at": now,
            }
        },
        now,
    )
    if given_up:
        log.error("plan_out_of_attempts", plan_id=str(plan_id))
    return None


async def _hand_back(ctx, plan_id: ObjectId, token: str, *, failed_attempt: bool = True) -> None:
    """Gives the plan up for another solve, here or in another process."""
    await LEASE.release(
        ctx.db["plans"],
        {"_id": plan_id},
        token,
        ctx.clock.now(),
        {"status": "queued"},
        inc=None if failed_attempt else {"attempts": -1},
    )


async def _fail(ctx, plan_id: ObjectId, token: str, message: str) -> None:
    await ctx.db["plans"].update_one(
        {"_id": plan_id, **LEASE.held_by(token)},
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
