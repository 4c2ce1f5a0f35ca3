"""The daily jobs keep the service's clock: moving the development clock past their moment runs
them once, a job missed for days runs once, and of two processes only one runs it."""

from __future__ import annotations

import asyncio
from datetime import datetime, time, timedelta

import pytest
from bson import ObjectId

from jobs.scheduler import Scheduler
from server.clock import SHANGHAI
from server.context import Context
from tests.conftest import make_settings
from tests.test_hours import Scene

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def settings_overrides():
    return {"access_token_ttl_s": 60 * 86400}  # sessions outlive the days the clock moves


@pytest.fixture
async def scene(ctx, http, login):
    return await Scene(ctx, http).build(login)


async def _advance(http, seconds: float) -> None:
    moved = await http.post("/__dev__/clock", json={"advance_s": max(0.0, seconds)})
    assert moved.status_code == 200, moved.text


async def _advance_to(ctx, http, when: datetime) -> None:
    await _advance(http, (when - ctx.clock.now()).total_seconds())


def _next_local(after: datetime, at: time) -> datetime:
    """The first `at` (Asia/Shanghai) after `after`."""
    local = after.astimezone(SHANGHAI)
    moment = datetime.combine(local.date(), at, SHANGHAI)
    return moment if moment > local else moment + timedelta(days=1)


async def _runs(ctx, job: str) -> int:
    return (await ctx.db.job_runs.find_one({"_id": job}))["runs"]


async def test_past_two_the_daily_job_closes_a_forgotten_check_out_once(ctx, http, scene, login):
    scheduler = Scheduler(ctx)
    assert await scheduler.on_the_clock() == []  # first seen: counting starts now
    volunteer = await scene.volunteer(login, "o_forgot")
    await _advance_to(ctx, http, scene.starts_at - timedelta(minutes=5))
    assert (await scene.checkin(volunteer)).status_code == 200
    await scheduler.on_the_clock()  # the days the clock moved to get here: the check-in is open
    assert (await ctx.db.attendance.find_one({}))["status"] == "open"
    before = await _runs(ctx, "daily")

    late = scene.starts_at + timedelta(hours=3, minutes=ctx.settings.checkout_late_min)
    await _advance_to(ctx, http, _next_local(late, time(2, 10)))
    assert "daily" in await scheduler.on_the_clock()
    record = await ctx.db.attendance.find_one({"user_id": ObjectId(volunteer.user_id)})
    assert record["status"] == "auto_closed" and record["flagged"]
    mine = (await http.get("/mp/v1/me/hours", headers=volunteer.headers)).json()
    assert mine["pending_hours"] == 3.0  # from the start to the end: its rule

    await _advance(http, 3600)  # later the same day
    assert "daily" not in await scheduler.on_the_clock()
    assert await _runs(ctx, "daily") == before + 1

    await _advance(http, 8 * 86400)
    assert "daily" in await scheduler.on_the_clock()
    assert await scheduler.on_the_clock() == []
    assert await _runs(ctx, "daily") == before + 2  # eight missed days, one run
    local = ctx.clock.local_now()
    expected = local.date() if local.time() >= time(2) else local.date() - timedelta(days=1)
    assert (await ctx.db.job_runs.find_one({"_id": "daily"}))["date"] == expected.isoformat()


async def test_past_nine_the_hours_pending_message_reaches_the_site_admin_once(
    ctx, http, emulator, scene, login
):
    scheduler = Scheduler(ctx)
    await scheduler.on_the_clock()
    admin = scene.site_admin
    await emulator.post(
        "/__emulator__/subscriptions",
        {"openid": "o_site_admin", "accepted": ["tmpl_hours_pending"] * 3},
    )
    accepted = await http.post(
        "/mp/v1/me/subscriptions", json={"accepted": ["tmpl_hours_pending"] * 3},
        headers=admin.headers,
    )  # fmt: skip
    assert accepted.status_code == 200, accepted.text
    await scene.credit(await login("o_helper"), 2)

    waited = ctx.clock.now() + timedelta(hours=ctx.settings.hours_pending_after_h + 1)
    await _advance_to(ctx, http, _next_local(waited, time(9, 30)))
    assert "hours_pending" in await scheduler.on_the_clock()
    await scheduler.tick()
    await _advance(http, 3600)
    assert "hours_pending" not in await scheduler.on_the_clock()
    await scheduler.tick()

    received = await http.get(
        f"{emulator.url}__emulator__/messages", params={"touser": "o_site_admin"}
    )
    [message] = received.json()["items"]
    assert message["template_id"] == "tmpl_hours_pending"
    assert message["data"]["number2"]["value"] == "1"


async def test_the_running_scheduler_follows_the_development_clock(ctx, http):
    scheduler = Scheduler(ctx)
    scheduler.start()
    try:
        for _ in range(100):  # the first look records where the clock stands
            if await ctx.db.job_runs.count_documents({}) == 2:
                break
            await asyncio.sleep(0.2)
        await _advance(http, 86400)
        for _ in range(150):
            if await _runs(ctx, "daily") and await _runs(ctx, "hours_pending"):
                break
            await asyncio.sleep(0.2)
        assert await _runs(ctx, "daily") == 1 and await _runs(ctx, "hours_pending") == 1
    finally:
        await scheduler.stop()


async def test_two_processes_never_both_run_a_day(ctx, mongo_uri, emulator, tmp_path):
    other_ctx = await Context.start(
        make_settings(mongo_uri, emulator, tmp_path, mongodb_db=ctx.settings.mongodb_db)
    )
    try:
        mine, theirs = Scheduler(ctx), Scheduler(other_ctx)
        job = mine.jobs[0]
        await asyncio.gather(mine.claim(job), theirs.claim(job))
        for _ in range(3):
            ctx.clock.advance(86400)
            other_ctx.clock.advance(86400)
            claims = await asyncio.gather(
                *[s.claim(job) for s in [mine, theirs] * 10]
            )  # fmt: skip
            assert claims.count(True) == 1

        # The lease changes hands after a run: the new holder does not run that day again.
        ctx.clock.advance(86400)
        other_ctx.clock.advance(86400)
        assert "daily" in await mine.on_the_clock()
        lapse = ctx.settings.scheduler_lease_s + 1
        ctx.clock.advance(lapse)
        other_ctx.clock.advance(lapse)
        assert await theirs.on_the_clock() == []
        assert await theirs._leading()
    finally:
        await other_ctx.close()
