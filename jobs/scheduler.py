"""The scheduler: APScheduler ticks in the service process (or alone with
`python -m server scheduler`); only the holder of the MongoDB lease acts, so several processes
can run it and reminders still go out once. The lease is a document of its own in the
`leases` collection, which this module owns."""

from __future__ import annotations

import os
import socket
import uuid

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from server.clock import SHANGHAI
from server.db import Lease
from server.domain import activities, attendance, notifications, stats

log = structlog.get_logger(__name__)

LEASE_ID = "scheduler"


class Scheduler:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.aps = AsyncIOScheduler(timezone=SHANGHAI)
        self.lease = Lease(
            ctx.settings.scheduler_lease_s, holder_field="holder", until_field="until"
        )

    def start(self) -> None:
        every = self.ctx.settings.dispatch_interval_s
        self.aps.add_job(self.tick, "interval", seconds=every, max_instances=1, coalesce=True)
        self.aps.add_job(
            self.daily, CronTrigger(hour=2, minute=0, timezone=SHANGHAI), max_instances=1,
            coalesce=True,
        )  # fmt: skip
        self.aps.add_job(
            self.hours_pending, CronTrigger(hour=9, minute=0, timezone=SHANGHAI),
            max_instances=1, coalesce=True,
        )  # fmt: skip
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

    async def daily(self) -> None:
        """Lifecycle, forgotten check-outs, and the statistics roll-ups checked against a recount
        of this year and the last (corrections to last year's records arrive late)
        (Asia/Shanghai, 02:00)."""
        if not await self._leading():
            return
        moved = await activities.advance_lifecycle(self.ctx)
        closed = await attendance.close_forgotten(self.ctx)
        this_year = self.ctx.clock.local_now().year
        repaired = 0
        for year in (this_year - 1, this_year):
            repaired += sum((await stats.reconcile(self.ctx, year)).values())
        log.info("daily_jobs_done", closed_checkins=closed, rollups_repaired=repaired, **moved)

    async def hours_pending(self) -> None:
        if await self._leading():
            await notifications.remind_pending_hours(self.ctx)

    async def stop(self) -> None:
        self.aps.shutdown(wait=False)
        await self.lease.release(
            self.ctx.db["leases"], {"_id": LEASE_ID}, self.holder, self.ctx.clock.now()
        )
