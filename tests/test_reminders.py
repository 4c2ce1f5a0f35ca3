"""Reminders: the right message, once, with quotas, retries, and dispatchers that may die."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from bson import ObjectId

from server.clock import SHANGHAI
from server.context import Context
from server.db import Lease
from server.domain import access, activities, hours, identity, notifications, orgs, signups, sites
from server.domain.notifications import subscriptions
from tests.conftest import make_settings

pytestmark = pytest.mark.timeout(300)
TEMPLATE = "tmpl_activity_reminder"
TITLE = "走进乡村学校的天文观测活动（需自带手电），请准时"


@pytest.fixture
async def activity(ctx):
    root = await orgs.create_org(ctx, "省科协", "province", None)
    start = ctx.clock.now() + timedelta(days=3)
    activity_id = await activities.create_activity(
        ctx,
        activities.NewActivity(
            title=TITLE,
            description="观星",
            org_id=str(root),
            starts_at=start,
            ends_at=start + timedelta(hours=2),
            capacity=10,
        ),
        created_by=None,
    )
    await activities.publish(ctx, activity_id, publisher_openid="o_org")
    return activity_id


@pytest.fixture
def accept(ctx, emulator):
    """What the user's taps in wx.requestSubscribeMessage do: WeChat records the one-time
    subscriptions (it refuses a send beyond them), and the mini-program tells the service."""

    async def record(user_id: ObjectId, template_ids: list[str]) -> None:
        openid = await identity.openid_of(ctx, user_id)
        body = {"openid": openid, "accepted": template_ids}
        await emulator.post("/__emulator__/subscriptions", body)
        await notifications.accept(ctx, user_id, template_ids)

    return record


@pytest.fixture
def volunteer(ctx, accept):
    async def make(openid: str, accepts: int = 2) -> ObjectId:
        user_id = await identity.ensure_user(ctx, openid)
        if accepts:
            await accept(user_id, [TEMPLATE] * accepts)
        return user_id

    return make


def _advance_to(ctx, when) -> None:
    ctx.clock.advance(max(0.0, (when - ctx.clock.now()).total_seconds()) + 1)


async def test_a_sign_up_gets_its_two_reminders_at_their_times(ctx, emulator, activity, volunteer):
    user = await volunteer("o_r1")
    await signups.sign_up(ctx, user, activity)
    pending = await ctx.db.reminders.find({"user_id": user}).sort("due_at", 1).to_list(None)
    starts_at = (await activities.get_doc(ctx, activity))["starts_at"]
    assert [starts_at - r["due_at"] for r in pending] == [timedelta(hours=24), timedelta(hours=2)]

    assert await notifications.dispatch_due(ctx) == 0  # nothing is due yet
    _advance_to(ctx, pending[0]["due_at"])
    assert await notifications.dispatch_due(ctx) == 1
    assert len(emulator.messages("o_r1")) == 1
    _advance_to(ctx, pending[1]["due_at"])
    await notifications.dispatch_due(ctx)
    received = emulator.messages("o_r1")
    assert len(received) == 2
    assert received[0]["template_id"] == TEMPLATE
    assert received[0]["data"]["thing1"]["value"] == TITLE[:20]  # WeChat's limit for thing
    assert await notifications.quotas(ctx, user) == notifications.QuotaList(
        items=[notifications.Quota(template_id=TEMPLATE, remaining=0)]
    )


async def test_caravan_crews_are_reminded_the_evening_before(ctx, activity, volunteer):
    nine = (ctx.clock.local_now() + timedelta(days=3)).replace(hour=9, minute=0, second=0)
    await ctx.db.activities.update_one(
        {"_id": activity},
        {
            "$set": {
                "tags": ["科普大篷车"],
                "starts_at": nine,
                "signup_deadline": nine,
                "ends_at": nine + timedelta(hours=2),
            }
        },
    )  # a morning show: neither lead falls at 18:00
    user = await volunteer("o_crew")
    await signups.sign_up(ctx, user, activity)
    dues = sorted(r["due_at"] for r in await ctx.db.reminders.find({"user_id": user}).to_list(None))
    starts_at = (await activities.get_doc(ctx, activity))["starts_at"].astimezone(SHANGHAI)
    evening = [d.astimezone(SHANGHAI) for d in dues if d.astimezone(SHANGHAI).hour == 18]
    assert len(dues) == 3 and len(evening) == 1
    assert evening[0].date() == starts_at.date() - timedelta(days=1)


async def test_cancelling_the_sign_up_cancels_its_reminders(ctx, emulator, activity, volunteer):
    user = await volunteer("o_r2")
    await signups.sign_up(ctx, user, activity)
    await signups.cancel_signup(ctx, user, activity)
    ctx.clock.advance(4 * 86400)
    await notifications.dispatch_due(ctx)
    assert emulator.messages("o_r2") == []
    assert await ctx.db.reminders.count_documents({"user_id": user, "state": "pending"}) == 0


async def test_no_quota_is_skipped_and_not_retried(ctx, emulator, activity, volunteer):
    user = await volunteer("o_r3", accepts=0)
    await signups.sign_up(ctx, user, activity)
    ctx.clock.advance(3 * 86400 - 600)  # both reminders due, the activity not yet begun
    await notifications.dispatch_due(ctx)
    states = await ctx.db.reminders.distinct("state", {"user_id": user})
    assert states == ["skipped"]
    assert emulator.messages("o_r3") == []


async def _due_now(ctx, user, n: int, prefix: str) -> None:
    for i in range(n):
        await notifications.schedule(
            ctx, user_id=user, key="activity_reminder", data={"thing1": {"value": "x"}},
            due_at=ctx.clock.now(), dedupe=f"{prefix}{i}",
        )  # fmt: skip


async def test_a_batch_spends_what_each_quota_holds_and_skips_the_rest(ctx, emulator, volunteer):
    short, ample = await volunteer("o_q_short"), await volunteer("o_q_ample", 5)
    await _due_now(ctx, short, 3, "short")  # one batch: 3 reminders of one template, quota 2
    await _due_now(ctx, ample, 3, "ample")
    assert await notifications.dispatch_due(ctx) == 6
    assert len(emulator.messages("o_q_short")) == 2
    assert len(emulator.messages("o_q_ample")) == 3
    skipped = await ctx.db.reminders.find({"state": "skipped"}).to_list(None)
    assert [(r["user_id"], r["last_error"]) for r in skipped] == [(short, "no_quota")]
    remaining = [(await notifications.quotas(ctx, u)).items[0].remaining for u in (short, ample)]
    assert remaining == [0, 2]


async def test_batches_taking_from_one_quota_at_once_get_what_it_holds(ctx, volunteer, accept):
    """Concurrent takes conflict in the database and are decided again; none gives too much."""
    user = await volunteer("o_q_shared", accepts=0)
    # After the first round the connections are open, so the two transactions overlap.
    for _ in range(3):
        await accept(user, [TEMPLATE] * 7)
        batches = [
            [{"_id": ObjectId(), "user_id": user, "template_id": TEMPLATE} for _ in range(6)]
            for _ in range(2)
        ]
        given = await asyncio.gather(*[subscriptions.take_quotas(ctx, b) for b in batches])
        assert sum(len(g) for g in given) == 7
        assert all(g <= {r["_id"] for r in b} for g, b in zip(given, batches, strict=True))
        assert (await notifications.quotas(ctx, user)).items[0].remaining == 0


async def test_43101_is_not_retried(ctx, emulator, activity, volunteer):
    user = await volunteer("o_r4", accepts=1)
    await signups.sign_up(ctx, user, activity)
    await emulator.fault("subscribe_send", errcode=43101)
    _advance_to(
        ctx, (await ctx.db.reminders.find_one({"user_id": user}, sort=[("due_at", 1)]))["due_at"]
    )
    await notifications.dispatch_due(ctx)
    first = await ctx.db.reminders.find_one({"user_id": user}, sort=[("due_at", 1)])
    assert first["state"] == "skipped" and first["last_error"].startswith("43101")
    assert first["attempts"] == 1


async def test_45009_three_times_then_delivered(ctx, emulator, activity, volunteer):
    user = await volunteer("o_r5", accepts=1)
    await notifications.schedule(
        ctx, user_id=user, key="activity_reminder", data={"thing1": {"value": "x"}},
        due_at=ctx.clock.now(), dedupe="t45009", activity_id=activity,
    )  # fmt: skip
    await emulator.fault("subscribe_send", errcode=45009, count=3)
    for _ in range(4):
        await notifications.dispatch_due(ctx)
        ctx.clock.advance(3600)
    reminder = await ctx.db.reminders.find_one({"dedupe": "t45009"})
    assert reminder["state"] == "sent" and reminder["attempts"] == 4
    assert len(emulator.messages("o_r5")) == 1
    assert (await notifications.quotas(ctx, user)).items[0].remaining == 0


async def test_transient_errors_end_dead_after_the_limit(ctx, emulator, activity, volunteer):
    user = await volunteer("o_r6", accepts=1)
    await notifications.schedule(
        ctx, user_id=user, key="activity_reminder", data={"thing1": {"value": "x"}},
        due_at=ctx.clock.now(), dedupe="tdead", activity_id=activity,
    )  # fmt: skip
    await emulator.fault("subscribe_send", errcode=-1, count=10)
    for _ in range(6):
        await notifications.dispatch_due(ctx)
        ctx.clock.advance(7200)
    reminder = await ctx.db.reminders.find_one({"dedupe": "tdead"})
    assert reminder["state"] == "dead" and reminder["last_error"].startswith("-1")
    summary = await notifications.summary(ctx)
    assert summary.counts["dead"] == 1 and summary.dead[0].id == str(reminder["_id"])
    emulator.state.clear_faults()
    await notifications.retry(ctx, reminder["_id"])
    await notifications.dispatch_due(ctx)
    assert (await ctx.db.reminders.find_one({"dedupe": "tdead"}))["state"] == "sent"


async def test_activity_cancellation_tells_everyone_and_drops_reminders(
    ctx, emulator, activity, volunteer, accept
):
    users = [await volunteer(f"o_c{i}", accepts=0) for i in range(3)]
    for user in users:
        await accept(user, ["tmpl_activity_changed"])
        await signups.sign_up(ctx, user, activity)
    await signups.cancel_activity(ctx, activity, reason="暴雨")
    await notifications.dispatch_due(ctx)
    for i in range(3):
        [message] = emulator.messages(f"o_c{i}")
        assert message["template_id"] == "tmpl_activity_changed"
        assert message["data"]["thing3"] == {"value": "已取消：暴雨"}  # the organiser's reason
    assert await ctx.db.reminders.count_documents({"state": "pending"}) == 0
    shown = await activities.get_activity(ctx, activity)
    assert (shown.status, shown.cancel_reason) == ("cancelled", "暴雨")


async def _many_due(ctx, emulator, n: int, prefix: str) -> None:
    users = [ObjectId() for _ in range(n)]
    await ctx.db.users.insert_many(
        [{"_id": u, "openid": f"{prefix}{i}"} for i, u in enumerate(users)]
    )
    for i, user in enumerate(users):
        # As the `accept` fixture does, straight into the emulator's state for thousands.
        emulator.state.accept_subscriptions(f"{prefix}{i}", [TEMPLATE])
        await notifications.accept(ctx, user, [TEMPLATE])
    now = ctx.clock.now()
    await asyncio.gather(
        *[
            notifications.schedule(
                ctx, user_id=u, key="activity_reminder", data={"thing1": {"value": "活动"}},
                due_at=now, dedupe=f"{prefix}{i}",
            )
            for i, u in enumerate(users)
        ]
    )  # fmt: skip


async def test_two_dispatchers_deliver_2000_exactly_once(ctx, emulator, tmp_path, mongo_uri):
    await _many_due(ctx, emulator, 2000, "o_bulk")
    other = await Context.start(
        make_settings(mongo_uri, emulator, tmp_path, mongodb_db=ctx.settings.mongodb_db)
    )
    try:
        handled = await asyncio.gather(
            notifications.dispatch_due(ctx, "a"), notifications.dispatch_due(other, "b")
        )
    finally:
        await other.close()
    assert sum(handled) == 2000
    received = [m["touser"] for m in emulator.messages() if m["touser"].startswith("o_bulk")]
    assert len(received) == 2000 and len(set(received)) == 2000
    assert await ctx.db.reminders.count_documents({"state": "sent"}) == 2000


_DISPATCHER = """
import asyncio, sys
from config import load_settings
from server.clock import SHANGHAI
from server.context import Context
from server.domain import notifications
from server.logs import configure_logging

async def main():
    configure_logging("json", "warning")
    ctx = await Context.start(load_settings({}, mongodb_uri=sys.argv[1], mongodb_db=sys.argv[2],
        wechat_api_base=sys.argv[3], data_dir=sys.argv[4], secret_key=sys.argv[5],
        data_key=sys.argv[6], dispatch_batch=100, dispatch_concurrency=20))
    print("ready", flush=True)
    await notifications.dispatch_due(ctx, "doomed")

asyncio.run(main())
"""


async def test_a_dispatcher_killed_mid_batch_loses_nothing(ctx, emulator, tmp_path):
    await _many_due(ctx, emulator, 300, "o_kill")
    emulator.state.latency_ms = 50
    s = ctx.settings
    doomed = subprocess.Popen(
        [sys.executable, "-c", _DISPATCHER, s.mongodb_uri, s.mongodb_db, emulator.url,
         str(tmp_path), s.secret_key, s.data_key],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    try:
        assert (await loop.run_in_executor(None, doomed.stdout.readline)).strip() == b"ready"
        for _ in range(200):
            await asyncio.sleep(0.05)
            if len(emulator.messages()) >= 40:
                break
        os.kill(doomed.pid, signal.SIGKILL)
        await loop.run_in_executor(None, doomed.wait)
    finally:
        emulator.state.latency_ms = 0
    sent_before = len(emulator.messages())
    assert 0 < sent_before < 300, "the kill must land mid-batch"
    claimed = await ctx.db.reminders.count_documents({"state": "sending"})
    assert claimed > 0
    await notifications.dispatch_due(ctx)  # what the dead one never claimed
    # What it claimed waits for its claim to run out: nobody else sends those meanwhile.
    assert await ctx.db.reminders.count_documents({"state": "sending"}) == claimed
    ctx.clock.advance(s.reminder_claim_s + 1)
    await notifications.dispatch_due(ctx)
    received = {m["touser"] for m in emulator.messages()}
    assert received == {f"o_kill{i}" for i in range(300)}
    assert await ctx.db.reminders.count_documents({"state": {"$ne": "sent"}}) == 0


async def test_only_the_lease_holder_leads(ctx):
    lease, named = Lease(30, holder_field="holder", until_field="until"), {"_id": "scheduler"}

    async def take(holder: str) -> bool:
        return await lease.acquire(ctx.db.leases, named, holder, ctx.clock.now(), upsert=True)

    assert await take("a")
    assert not await take("b")
    assert await take("a")  # renewal
    ctx.clock.advance(31)
    assert await take("b")
    assert await lease.release(ctx.db.leases, named, "b", ctx.clock.now())
    assert await take("a")  # given up: free at once


async def test_subscription_endpoints(ctx, http, login):
    templates = (await http.get("/mp/v1/subscriptions/templates")).json()["items"]
    assert {t["key"] for t in templates} >= {
        "activity_reminder", "waitlist_promoted", "activity_changed", "hours_pending",
        "visit_scheduled",
    }  # fmt: skip
    session = await login()
    accepted = await http.post(
        "/mp/v1/me/subscriptions", json={"accepted": [TEMPLATE, TEMPLATE]}, headers=session.headers
    )
    assert accepted.json() == {"items": [{"template_id": TEMPLATE, "remaining": 2}]}
    unknown = await http.post(
        "/mp/v1/me/subscriptions", json={"accepted": ["nope"]}, headers=session.headers
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "accepted[0]"
    mine = await http.get("/mp/v1/me/subscriptions", headers=session.headers)
    assert mine.json()["items"][0]["remaining"] == 2


async def test_the_outbox_view_is_for_root_admins(ctx, http, login):
    root = await orgs.create_org(ctx, "省科协", "province", None)
    city = await orgs.create_org(ctx, "新乡市科协", "city", root)
    admin, local = await login(), await login()
    await access.grant_role(ctx, ObjectId(admin.user_id), "org_admin", root)
    await access.grant_role(ctx, ObjectId(local.user_id), "org_admin", city)
    assert (await http.get("/api/v1/reminders", headers=admin.headers)).status_code == 200
    assert (await http.get("/api/v1/reminders", headers=local.headers)).status_code == 403


async def test_hours_pending_for_48_hours_remind_the_site_admins(ctx, emulator, volunteer, accept):
    root = await orgs.create_org(ctx, "省科协", "province", None)
    admin = await volunteer("o_site_admin", accepts=0)
    await accept(admin, ["tmpl_hours_pending"])
    site = await sites.create_site(
        ctx,
        sites.NewSite(
            name="城关小学", kind="school", org_id=str(root),
            location=sites.LocationIn(lng=113.8, lat=35.4),
        ),
    )  # fmt: skip
    await sites.add_admin(ctx, site, admin)
    await hours.credit(
        ctx, user_id=ObjectId(), hours=2, org_id=root, site_id=site, source="activity"
    )
    assert await notifications.remind_pending_hours(ctx) == 0  # not yet 48 hours
    ctx.clock.advance(49 * 3600)
    assert await notifications.remind_pending_hours(ctx) == 1
    assert await notifications.remind_pending_hours(ctx) == 0  # once a day
    await notifications.dispatch_due(ctx)
    [message] = emulator.messages("o_site_admin")
    assert message["template_id"] == "tmpl_hours_pending"
    assert message["data"]["number2"]["value"] == "1"


async def test_the_scheduler_dispatches_only_while_it_holds_the_lease(
    ctx, emulator, activity, volunteer
):
    from jobs.scheduler import LEASE_ID, Scheduler

    user = await volunteer("o_sched")
    await signups.sign_up(ctx, user, activity)
    ctx.clock.advance(3 * 86400 - 600)  # both reminders due, the activity not yet begun
    scheduler = Scheduler(ctx)
    other = Lease(60, holder_field="holder", until_field="until")
    named = {"_id": LEASE_ID}
    assert await other.acquire(ctx.db.leases, named, "someone-else", ctx.clock.now(), upsert=True)
    await scheduler.tick()
    assert emulator.messages("o_sched") == []
    ctx.clock.advance(61)
    await scheduler.tick()
    assert len(emulator.messages("o_sched")) == 2


def _stale_count(metrics: str) -> float:
    line = 'ikepu_reminders_stale_total{template="activity_reminder"}'
    return sum(float(row.split()[-1]) for row in metrics.splitlines() if row.startswith(line))


async def test_a_reminder_whose_activity_has_started_is_not_sent(
    ctx, http, login, emulator, activity, volunteer
):
    """The dispatcher was away past the start (a 2-hour reminder for 09:00 is no use at 10:00):
    dropped as stale, counted, and the user keeps the message for another time."""
    counted = _stale_count((await http.get("/metrics")).text)
    user = await volunteer("o_late")
    await signups.sign_up(ctx, user, activity)
    first, second = await ctx.db.reminders.find({"user_id": user}).sort("due_at", 1).to_list(None)
    starts_at = (await activities.get_doc(ctx, activity))["starts_at"]
    assert first["stale_after"] == second["stale_after"] == starts_at

    moved = (first["due_at"] - ctx.clock.now()).total_seconds() + 1
    await http.post("/__dev__/clock", json={"advance_s": moved})
    await notifications.dispatch_due(ctx)
    moved = (starts_at - ctx.clock.now()).total_seconds() + 3600
    await http.post("/__dev__/clock", json={"advance_s": moved})
    assert await notifications.dispatch_due(ctx) == 1

    assert len(emulator.messages("o_late")) == 1  # the 24-hour one, in time
    assert (await ctx.db.reminders.find_one({"_id": second["_id"]}))["state"] == "stale"
    mine = await notifications.quotas(ctx, user)
    assert mine.items[0].remaining == 1
    admin = await login()  # signed in now: the clock moved past yesterday's sessions
    root = (await activities.get_doc(ctx, activity))["org_id"]
    await access.grant_role(ctx, ObjectId(admin.user_id), "org_admin", root)
    outbox = (await http.get("/api/v1/reminders", headers=admin.headers)).json()
    assert outbox["counts"] == {"sent": 1, "stale": 1}
    assert _stale_count((await http.get("/metrics")).text) == counted + 1


async def test_a_send_that_timed_out_is_settled_even_past_the_start(
    ctx, http, emulator, activity, volunteer
):
    """It may have gone out: sent again, and WeChat's count tells (as before its moment)."""
    user = await volunteer("o_unsure", accepts=1)
    starts_at = (await activities.get_doc(ctx, activity))["starts_at"]
    await notifications.schedule(
        ctx, user_id=user, key="activity_reminder", data={"thing1": {"value": "x"}},
        due_at=ctx.clock.now(), dedupe="tunsure", activity_id=activity, stale_after=starts_at,
    )  # fmt: skip
    await emulator.fault("subscribe_send", delay_ms=int(ctx.settings.wechat_timeout_s * 1000) + 500)
    await notifications.dispatch_due(ctx)
    await asyncio.sleep(1)  # WeChat delivers after the caller gave up
    assert (await ctx.db.reminders.find_one({"dedupe": "tunsure"}))["uncertain"]
    moved = (starts_at - ctx.clock.now()).total_seconds() + 60
    await http.post("/__dev__/clock", json={"advance_s": moved})
    await notifications.dispatch_due(ctx)
    assert (await ctx.db.reminders.find_one({"dedupe": "tunsure"}))["state"] == "sent"
    assert len(emulator.messages("o_unsure")) == 1
