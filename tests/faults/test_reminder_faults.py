"""Reminders under WeChat's faults, with two dispatchers: each due reminder reaches WeChat
exactly once, or is reported failed with its reason. Timeouts are the hard case: the send may
have gone through, and only WeChat's own count of the user's subscriptions can tell."""

from __future__ import annotations

import asyncio

import pytest
from bson import ObjectId

from server.context import Context
from server.domain import notifications
from tests.conftest import make_settings

TEMPLATE = "tmpl_activity_reminder"
USERS = 60
FAST = {"wechat_timeout_s": 0.3, "dispatch_batch": 15, "dispatch_concurrency": 8}


@pytest.fixture
def settings_overrides() -> dict:
    return FAST


async def _due(ctx, emulator, n: int) -> list[str]:
    openids = [f"o_fault_{i}" for i in range(n)]
    users = [ObjectId() for _ in openids]
    await ctx.db.users.insert_many(
        [{"_id": u, "openid": o} for u, o in zip(users, openids, strict=True)]
    )
    for user, openid in zip(users, openids, strict=True):
        await emulator.post(
            "/__emulator__/subscriptions", {"openid": openid, "accepted": [TEMPLATE]}
        )
        await notifications.accept(ctx, user, [TEMPLATE])
        await notifications.schedule(
            ctx, user_id=user, key="activity_reminder", data={"thing1": {"value": "科普讲座"}},
            due_at=ctx.clock.now(), dedupe=f"fault:{openid}",
        )  # fmt: skip
    return openids


async def test_timeouts_and_errors_with_two_dispatchers_deliver_each_exactly_once(
    ctx, emulator, tmp_path, mongo_uri
):
    openids = await _due(ctx, emulator, USERS)
    # Slower than the timeout: WeChat still delivers these, after the caller gave up.
    await emulator.fault("subscribe_send", delay_ms=700, count=6)
    await emulator.fault("subscribe_send", errcode=-1, count=4)
    await emulator.fault("subscribe_send", errcode=45009, count=4)
    await emulator.fault("subscribe_send", errcode=40001, count=2)
    other = await Context.start(
        make_settings(mongo_uri, emulator, tmp_path, mongodb_db=ctx.settings.mongodb_db, **FAST)
    )
    try:
        for _ in range(12):
            await asyncio.gather(
                notifications.dispatch_due(ctx, "a"), notifications.dispatch_due(other, "b")
            )
            if not await ctx.db.reminders.count_documents(
                {"state": {"$in": ["pending", "sending"]}}
            ):
                break
            ctx.clock.advance(3600)  # past every backoff
            other.clock.advance(3600)
        await asyncio.sleep(1)  # the late deliveries land
    finally:
        await other.close()
    received = [m["touser"] for m in emulator.messages() if m["touser"].startswith("o_fault_")]
    assert len(received) == len(set(received)), "none twice"
    outcome = {
        doc["openid"]: (doc["state"], doc.get("last_error"))
        async for doc in ctx.db.reminders.find({}, {"openid": 1, "state": 1, "last_error": 1})
    }
    sent = {openid for openid, (state, _) in outcome.items() if state == "sent"}
    assert set(received) == sent and len(outcome) == len(openids)
    failed = {o: why for o, (state, why) in outcome.items() if state != "sent"}
    # The one a refreshed token could not save (40001 twice in a row) says why it failed.
    assert all(state == "dead" and why for state, why in (outcome[o] for o in failed)), failed
    assert len(sent) >= USERS - 2
    assert await ctx.db.reminders.count_documents({"uncertain": True}), "some sends timed out"
