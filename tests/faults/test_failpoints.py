"""Database errors injected with the embedded server's `configureFailPoint` (its
`--enable-test-commands`): a write that fails on the sign-up or the hours-confirm path answers
a clear 503 `unavailable` and leaves nothing half-written, and a retry with the same
Idempotency-Key then succeeds once.

The failpoints are server-wide, so this module runs its own embedded database; the app is
served in-process on it (tests/conftest.py's fixtures, with `mongo_uri` overridden here)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from server.db import EmbeddedDatabase
from server.domain import access, activities, hours, orgs, signup_repair, sites

# A command error, and a connection dropped mid-command. Not ShutdownInProgress (91): after
# that the driver, as the SDAM spec says, waits for its next heartbeat (10 s) before it tries
# the server again, so every call answers 503 meanwhile -- right, but slow to test.
NETWORK_TIMEOUT = 89
FAULTS = {
    "error": {"errorCode": NETWORK_TIMEOUT},
    "dropped": {"closeConnection": True},
}


@pytest.fixture(scope="module")
async def mongo_uri():
    database = EmbeddedDatabase(":memory:", test_commands=True)
    await database.start()
    yield database.uri
    await database.stop()


@pytest.fixture
async def fail(mongo_uri):
    """Fail the next matching command (after `skip` matches), from a client of the test's own."""
    client = AsyncMongoClient(mongo_uri)

    async def configure(command: str, fault: str, *, skip: int = 0, times: int = 1) -> None:
        await client.admin.command(
            {
                "configureFailPoint": "failCommand",
                "mode": {"skip": skip, "times": times},
                "data": {"failCommands": [command], **FAULTS[fault]},
            }
        )

    yield configure
    await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    await client.close()


def _assert_unavailable(response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "unavailable"
    assert "稍后重试" in error["message"]  # a message the volunteer can read


async def _activity(ctx, capacity: int = 5) -> ObjectId:
    root = await orgs.create_org(ctx, "省科协", "province", None)
    start = ctx.clock.now() + timedelta(days=3)
    activity = await activities.create_activity(
        ctx,
        activities.NewActivity(
            title="科普进社区",
            description="天文观测",
            org_id=str(root),
            starts_at=start,
            ends_at=start + timedelta(hours=2),
            capacity=capacity,
        ),
        created_by=ObjectId(),
    )
    await activities.publish(ctx, activity, publisher_openid="o_publisher")
    return activity


async def _consistent(ctx, activity_id: ObjectId) -> tuple[int, int]:
    """(confirmed counter, confirmed records), after the repair the service runs at start and
    daily, which is what makes a seat taken without its record free again."""
    await signup_repair.repair(ctx, since=None, settle=_no_wait)
    doc = await ctx.db.activities.find_one({"_id": activity_id})
    records = await ctx.db.signups.count_documents(
        {"activity_id": activity_id, "status": "confirmed"}
    )
    assert doc["seats_left"] == doc["capacity"] - doc["confirmed_count"]
    return doc["confirmed_count"], records


async def _no_wait() -> None:
    return None


async def _counted(ctx, activity_id: ObjectId) -> tuple[int, int]:
    """(confirmed counter, confirmed records) as they stand, nothing repaired."""
    doc = await ctx.db.activities.find_one({"_id": activity_id})
    records = await ctx.db.signups.count_documents(
        {"activity_id": activity_id, "status": "confirmed"}
    )
    return doc["confirmed_count"], records


async def _settled(ctx, activity_id: ObjectId, within_s: float) -> tuple[int, int]:
    """The counts once counter and records agree, or as they stand after `within_s`."""
    deadline = asyncio.get_running_loop().time() + within_s
    while (counted := await _counted(ctx, activity_id))[0] != counted[1]:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    return counted


# The sign-up's writes in the order it makes them, after the Idempotency-Key's own claim (an
# insert into `idempotency`): the seat (an update of the activity), then the record.
SIGNUP_WRITES = {"seat": ("update", 0), "record": ("insert", 1)}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("write", sorted(SIGNUP_WRITES))
async def test_a_failed_write_in_a_signup_answers_503_and_leaves_no_seat_without_record(
    ctx, http, login, fail, write, fault, monkeypatch
):
    monkeypatch.setattr(signup_repair, "REPAIR_SETTLE_S", 0.3)
    activity = await _activity(ctx)
    volunteer = await login()
    headers = volunteer.headers | {"Idempotency-Key": uuid.uuid4().hex}
    path = f"/mp/v1/activities/{activity}/signup"

    command, skip = SIGNUP_WRITES[write]
    await fail(command, fault, skip=skip)
    _assert_unavailable(await http.post(path, headers=headers))
    assert await ctx.db.signups.count_documents({"activity_id": activity}) == 0
    # A seat taken without its record is given back by the repair the failure starts, not held
    # until the night's.
    assert await _settled(ctx, activity, within_s=5) == (0, 0)
    # The failed answer was not kept: the retry runs, and takes exactly one seat.
    retried = await http.post(path, headers=headers)
    assert retried.status_code == 201, retried.text
    assert retried.headers.get("Idempotent-Replayed") is None
    assert retried.json()["status"] == "confirmed"
    again = await http.post(path, headers=headers)
    assert again.json() == retried.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await _consistent(ctx, activity) == (1, 1)


async def _pending_credits(ctx, user_id: ObjectId, n: int) -> tuple[ObjectId, list[ObjectId]]:
    root = await orgs.create_org(ctx, "省科协", "province", None)
    site = await sites.create_site(
        ctx,
        sites.NewSite(
            name="新乡市第一中学",
            kind="school",
            org_id=str(root),
            location=sites.LocationIn(lng=113.9, lat=35.3),
        ),
    )
    credits = [
        await hours.credit(
            ctx,
            user_id=user_id,
            hours=2,
            org_id=root,
            site_id=site,
            source="activity",
            activity_id=ObjectId(),
        )
        for _ in range(n)
    ]
    return root, credits


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("update", [0, 1], ids=["corrections", "credits"])
async def test_a_failed_write_in_an_hours_confirmation_answers_503_and_a_retry_completes_it(
    ctx, http, login, fail, update, fault
):
    admin, volunteer = await login(), await login()
    root, credits = await _pending_credits(ctx, ObjectId(volunteer.user_id), 3)
    await access.grant_role(ctx, ObjectId(admin.user_id), "org_admin", root)
    # A correction made while pending follows its credit into the confirmed total.
    await http.post(
        f"/api/v1/hours/{credits[0]}/adjust",
        json={"hours": 1.5, "reason": "提前离场"},
        headers=admin.headers,
    )
    body = {"record_ids": [str(c) for c in credits]}
    headers = admin.headers | {"Idempotency-Key": uuid.uuid4().hex}
    ledger_before = await ctx.db.hours_ledger.count_documents({})
    user = ObjectId(volunteer.user_id)
    assert await hours.totals(ctx, user) == (0.0, 5.5)

    # Skip the claim's own write: updates after it are the confirmation's, in a transaction that
    # is tried again on a transient failure, so the failure lasts for every round.
    await fail("update", fault, skip=update, times=hours.CONFIRM_ATTEMPTS)
    _assert_unavailable(await http.post("/api/v1/hours/confirm", json=body, headers=headers))
    assert await ctx.db.hours_ledger.count_documents({}) == ledger_before
    # Unchanged or whole: never a correction confirmed without its credit.
    assert await hours.totals(ctx, user) in {(0.0, 5.5), (5.5, 0.0)}

    retried = await http.post("/api/v1/hours/confirm", json=body, headers=headers)
    assert retried.status_code == 200, retried.text
    assert retried.headers.get("Idempotent-Replayed") is None
    assert await hours.totals(ctx, user) == (5.5, 0.0)
    again = await http.post("/api/v1/hours/confirm", json=body, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == retried.json()
    assert await ctx.db.hours_ledger.count_documents({}) == ledger_before
