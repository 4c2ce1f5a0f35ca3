"""The scheduler: APScheduler ticks in the service process (or alone with
`python -m server scheduler`); only the holder of the MongoDB lease acts, so several processes
can run it and reminders still go out once. The lease is a document of its own in the
`leases` collection, which this module owns.

The daily jobs keep the service's clock (`ctx.clock`), not the wall clock, so the development
clock drives them too: a tick every few seconds of wall time compares the clock with each job's
last run, kept in the `job_runs` collection (owned here: it is the scheduler's bookkeeping, no
domain concept), and runs a job whose moment of the day has passed since. A run is claimed
before it starts with a compare-and-set on the date it replaces, so two processes never both
run one; a job missed for days (no process held the lease) runs once, for the latest moment.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from pymongo.errors import DuplicateKeyError

from server.clock import SHANGHAI
from server.db import Lease
from server.domain import activities, attendance, disputes, notifications, signup_repair, stats

log = structlog.get_logger(__name__)

LEASE_ID = "scheduler"
SEAT_REPAIR_LOOKBACK = timedelta(days=2)  # a day's touches and the day before, in case one ran late
CLOCK_CHECK_S = 5.0  # wall time between looks at the service's clock for daily jobs


@dataclass(frozen=True)
class DailyJob:
    name: str  # its document's `_id` in `job_runs`
    at: time  # Asia/Shanghai
    run: Callable[[], Awaitable[None]]


def latest_moment(job: DailyJob, local_now: datetime) -> str:
    """The local date (ISO) of the job's latest moment at or before now."""
    day = local_now.date()
    if local_now.time() < job.at:
        day -= timedelta(days=1)
    return day.isoformat()


class Scheduler:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.aps = AsyncIOScheduler(timezone=SHANGHAI)
        self.lease = Lease(
            ctx.settings.scheduler_lease_s, holder_field="holder", until_field="until"
        )
        self.jobs = (
            DailyJob("daily", time(2, 0), self.daily),
            DailyJob("hours_pending", time(9, 0), self.hours_pending),
        )

    def start(self) -> None:
        every = self.ctx.settings.dispatch_interval_s
        self.aps.add_job(self.tick, "interval", seconds=every, max_instances=1, coalesce=True)
        self.aps.add_job(
            self.on_the_clock, "interval", seconds=CLOCK_CHECK_S, max_instances=1, coalesce=True
        )
        self.aps.start()
        log.info("scheduler_started", holder=self.holder, every_s=every)

    async def _leading(self) -> bool:
        return await self.lease.acquire(
            self.ctx.db["leases"], {"_id": LEASE_ID}, self.holder, self.ctx.clock.now(), upsert=True
        )

    async def tick(self) -> None:
        """Dispatch due reminders, if this process holds the lease."""
        if await self._leading():
            sent = await notifications.dispatch_due(self.ctx, self.holder)
            if sent:
                log.info("reminders_dispatched", handled=sent)

    async def on_the_clock(self) -> list[str]:
        """Run each daily job whose moment has passed since its last run, if this process holds
        the lease; returns the names of those it ran."""
        if not await self._leading():
            return []
        ran = []
        for job in self.jobs:
            if await self.claim(job):
                ran.append(job.name)
                await job.run()
        return ran

    async def claim(self, job: DailyJob) -> bool:
        """Take the job's latest moment as this process's to run, unless it ran for it.

        A job seen for the first time starts counting from there: its next moment is its first
        run. The claim comes before the run (a run that fails is not repeated until the next
        moment; each job catches up on everything left over from the days before it)."""
        runs = self.ctx.db["job_runs"]
        now = self.ctx.clock.now()
        due = latest_moment(job, now.astimezone(SHANGHAI))
        last = await runs.find_one({"_id": job.name})
        if last is None:
            with contextlib.suppress(DuplicateKeyError):  # another process saw it first
                await runs.insert_one({"_id": job.name, "date": due, "runs": 0, "seen_at": now})
            return False
        if last["date"] >= due:
            return False
        # Compare-and-set on the date it replaces: of two claims, one matches.
        claimed = await runs.update_one(
            {"_id": job.name, "date": last["date"]},
            {"$set": {"date": due, "ran_at": now, "holder": self.holder}, "$inc": {"runs": 1}},
        )
        return claimed.modified_count == 1

    async def daily(self) -> None:
        """Lifecycle, forgotten check-outs, seat counters a crash left out of step with the
        sign-ups, disputes left unanswered, and the statistics roll-ups checked against a
        recount of this year and the last (corrections to last year's records arrive late)
        (Asia/Shanghai, 02:00)."""
        moved = await activities.advance_lifecycle(self.ctx)
        closed = await attendance.close_forgotten(self.ctx)
        seats = await signup_repair.repair(
            self.ctx, since=self.ctx.clock.now() - SEAT_REPAIR_LOOKBACK
        )
        overdue = await disputes.remind_overdue(self.ctx)
        this_year = self.ctx.clock.local_now().year
        repaired = 0
        for year in (this_year - 1, this_year):
            repaired += sum((await stats.reconcile(self.ctx, year)).values())
        log.info(
            "daily_jobs_done", closed_checkins=closed, rollups_repaired=repaired,
            disputes_reminded=overdue,
            seat_counters_repaired=seats["repaired"], **moved,
        )  # fmt: skip

    async def hours_pending(self) -> None:
        """Remind site admins of hours waiting for them (Asia/Shanghai, 09:00)."""
        await notifications.remind_pending_hours(self.ctx)

    async def stop(self) -> None:
        self.aps.shutdown(wait=False)
        await self.lease.release(
            self.ctx.db["leases"], {"_id": LEASE_ID}, self.holder, self.ctx.clock.now()
        )
