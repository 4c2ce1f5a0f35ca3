"""Request paths send only shapes the embedded server answers from an index: no findAndModify
(it scans the collection) and no `$expr` or `$or` in a filter. The commands are read off the
service's own client through a pymongo CommandListener while the mini-program and staff APIs are
driven; and the conditional writes that replaced findAndModify keep their guarantees under
concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import timedelta

import pytest
from bson import ObjectId
from hypothesis import given
from hypothesis import strategies as st
from pymongo import monitoring

from server.clock import SHANGHAI
from server.db import Lease, close_client, database, make_client
from server.domain import (
    access,
    activities,
    attendance,
    caravans,
    events,
    hours,
    identity,
    notifications,
    orgs,
    ratelimit,
    signups,
    sites,
)
from server.domain.errors import NotFound, RateLimited
from server.domain.planning import publishing
from server.domain.stats import rollups

SITE = (113.806, 35.462)  # WGS-84


SCANNING = {"$expr", "$or"}  # operators the embedded server answers by reading every document


def _scans(value) -> bool:
    if isinstance(value, dict):
        return any(key in SCANNING or _scans(inner) for key, inner in value.items())
    if isinstance(value, list):
        return any(_scans(inner) for inner in value)
    return False


class CommandLog(monitoring.CommandListener):
    """Every command the service sends to its database while a step is being watched."""

    def __init__(self, db_name: str) -> None:
        self.db_name = db_name
        self.step: str | None = None
        self.seen: list[tuple[str, str, str, bool]] = []  # step, command, collection, scans

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.step is None or event.database_name != self.db_name:
            return
        collection = event.command.get(event.command_name)
        self.seen.append((self.step, event.command_name, str(collection), _scans(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    @contextlib.contextmanager
    def watching(self, step: str):
        self.step = step
        try:
            yield
        finally:
            self.step = None

    def sent(self, step: str) -> set[tuple[str, str]]:
        return {(command, collection) for s, command, collection, _ in self.seen if s == step}

    def offending(self) -> list[tuple[str, str, str, bool]]:
        return [c for c in self.seen if c[1] == "findAndModify" or c[3]]


@pytest.fixture
def settings_overrides():
    return {"access_token_ttl_s": 60 * 86400}  # sessions outlast the two days to the activity


@pytest.fixture
async def commands(ctx):
    """The context's client swapped for one that reports each command to a CommandLog."""
    log = CommandLog(ctx.settings.mongodb_db)
    client = make_client(ctx.settings.mongodb_uri, ctx.settings.mongo_driver, event_listeners=[log])
    service = ctx.client, ctx.db
    ctx.client, ctx.db = client, database(client, ctx.settings.mongodb_db)
    yield log
    ctx.client, ctx.db = service
    await close_client(client)


async def _an_activity_at_a_site(ctx, login):
    """A county, a school with its admin, a published activity there starting in two days."""
    root = await orgs.create_org(ctx, "省科协", "province", None)
    city = await orgs.create_org(ctx, "新乡市科协", "city", root)
    county = await orgs.create_org(ctx, "辉县市科协", "county", city)
    site = await sites.create_site(
        ctx,
        sites.NewSite(
            name="城关小学",
            kind="school",
            org_id=str(county),
            location=sites.LocationIn(lng=SITE[0], lat=SITE[1]),
        ),
    )
    admin = await login("o_shape_admin")
    await sites.add_admin(ctx, site, ObjectId(admin.user_id))
    starts_at = ctx.clock.now() + timedelta(days=2)
    activity = await activities.create_activity(
        ctx,
        activities.NewActivity(
            title="科学实验秀",
            description="",
            org_id=str(county),
            site_id=str(site),
            starts_at=starts_at,
            ends_at=starts_at + timedelta(hours=2),
            capacity=10,
        ),
        created_by=None,
    )
    await activities.publish(ctx, activity, publisher_openid="o_shape_admin")
    return site, activity, starts_at, admin


async def test_request_paths_send_no_find_and_modify_expr_or_or(ctx, http, login, commands):
    site, activity, starts_at, admin = await _an_activity_at_a_site(ctx, login)
    here = {"location": {"lng": SITE[0], "lat": SITE[1]}}

    with commands.watching("login"):
        volunteer = await login("o_shape_volunteer")  # created
        volunteer = await login("o_shape_volunteer")  # returning
    with commands.watching("refresh"):
        for _ in range(2):  # the token stays valid for a retry
            refreshed = await http.post(
                "/mp/v1/auth/refresh", json={"refresh_token": volunteer.refresh_token}
            )
            assert refreshed.status_code == 200, refreshed.text

    await signups.sign_up(ctx, ObjectId(volunteer.user_id), activity)
    ctx.clock.advance((starts_at - timedelta(minutes=5) - ctx.clock.now()).total_seconds())
    scene = (await attendance.checkin_code(ctx, activity)).scene
    with commands.watching("check-in"):
        for _ in range(2):
            checked_in = await http.post(
                f"/mp/v1/activities/{activity}/checkin",
                json={**here, "scene": scene},
                headers=volunteer.headers,
            )
            assert checked_in.status_code == 200, checked_in.text

    ctx.clock.advance(timedelta(hours=2, minutes=10).total_seconds())
    keyed = {**volunteer.headers, "Idempotency-Key": "checkout-1"}
    with commands.watching("check-out"):
        out = await http.post(f"/mp/v1/activities/{activity}/checkout", json=here, headers=keyed)
        assert out.status_code == 200, out.text
        replayed = await http.post(
            f"/mp/v1/activities/{activity}/checkout", json=here, headers=keyed
        )
        assert replayed.headers["Idempotent-Replayed"] == "true"
        repeat = await http.post(
            f"/mp/v1/activities/{activity}/checkout", json=here, headers=volunteer.headers
        )
        assert replayed.json() == repeat.json() == out.json()
    record = out.json()["record_id"]
    assert out.json()["status"] == "pending" and record

    with commands.watching("my hours"):
        mine = await http.get("/mp/v1/me/hours", headers=volunteer.headers)
        assert mine.json()["pending_hours"] == out.json()["hours"]
    with commands.watching("site pending"):
        pending = await http.get(f"/api/v1/sites/{site}/hours", headers=admin.headers)
        assert [i["record_id"] for i in pending.json()["items"]] == [record]
        first = await http.get(
            f"/api/v1/sites/{site}/hours?status=pending&limit=1", headers=admin.headers
        )
        assert [i["record_id"] for i in first.json()["items"]] == [record]

    with commands.watching("confirm"):
        answers = await asyncio.gather(
            *(
                http.post(
                    "/api/v1/hours/confirm", json={"record_ids": [record]}, headers=admin.headers
                )
                for _ in range(5)
            )
        )
        assert sum(a.json()["confirmed"] for a in answers) == 1

    keyed = {**admin.headers, "Idempotency-Key": "adjust-1"}
    change = {"hours": 1.5, "reason": "提前离场"}
    with commands.watching("adjust"):
        adjusted = await http.post(f"/api/v1/hours/{record}/adjust", json=change, headers=keyed)
        again = await http.post(f"/api/v1/hours/{record}/adjust", json=change, headers=keyed)
    assert adjusted.status_code == 200, adjusted.text
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == adjusted.json()
    assert await ctx.db.hours_ledger.count_documents({"kind": "adjustment"}) == 1

    with commands.watching("dispute"):
        disputed = await http.post(
            f"/mp/v1/hours/{record}/dispute", json={"reason": "时长有误"}, headers=volunteer.headers
        )
    assert disputed.status_code == 201, disputed.text

    organiser = await login("o_shape_organiser")
    root = await orgs.root_org(ctx)
    await access.grant_role(ctx, ObjectId(organiser.user_id), "org_admin", root["_id"])
    with commands.watching("annual report"):
        report = await http.get(
            f"/api/v1/stats/annual?year={starts_at.astimezone(SHANGHAI).year}",
            headers=organiser.headers,
        )
    assert report.status_code == 200, report.text
    assert report.json()["volunteer"]["hours"] == 1.5

    with commands.watching("logout"):
        logged_out = await http.post(
            "/mp/v1/auth/logout",
            json={"refresh_token": volunteer.refresh_token},
            headers=volunteer.headers,
        )
    assert logged_out.json() == {"revoked": 1}

    assert commands.offending() == []
    # The listener saw the service's own writes on each path, so the check above means something.
    expected = {
        "login": {("update", "rate_limits"), ("insert", "users"), ("update", "users")},
        "refresh": {("find", "refresh_tokens")},
        "check-in": {("find", "attendance"), ("insert", "attendance")},
        "check-out": {
            ("update", "attendance"),
            ("insert", "hours_ledger"),
            ("find", "idempotency"),
        },
        "my hours": {("aggregate", "hours_ledger"), ("find", "hours_ledger")},
        "site pending": {("find", "hours_ledger")},
        "annual report": {("find", "stats_orgs"), ("find", "stats_volunteers")},
        "confirm": {("update", "hours_ledger"), ("insert", "stats_volunteers")},
        "adjust": {("insert", "hours_ledger"), ("update", "idempotency")},
        "dispute": {("insert", "hours_disputes")},
        "logout": {("update", "refresh_tokens")},
    }
    for step, wanted in expected.items():
        assert wanted <= commands.sent(step), (step, commands.sent(step))


@pytest.mark.parametrize("settings_overrides", [{"login_rate_per_openid": 2}])
async def test_a_tripped_rate_limit_sends_no_find_and_modify(http, login, emulator, commands):
    with commands.watching("login"):
        await login("o_shape_eager")
        await login("o_shape_eager")
        code = await emulator.jscode("o_shape_eager")
        refused = await http.post("/mp/v1/auth/login", json={"code": code})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert commands.offending() == []
    assert ("update", "rate_limits") in commands.sent("login")


async def test_concurrent_hits_count_exactly_up_to_the_limit(ctx):
    async def attempt() -> bool:
        try:
            await ratelimit.hit(ctx, "test:burst", 7)
        except RateLimited:
            return False
        return True

    assert sum(await asyncio.gather(*(attempt() for _ in range(40)))) == 7


async def test_concurrent_first_writes_make_one_document(ctx):
    users = await asyncio.gather(*(identity.ensure_user(ctx, "o_shape_once") for _ in range(20)))
    assert len(set(users)) == 1 and await ctx.db.users.count_documents({}) == 1
    activity = ObjectId()
    credits = await asyncio.gather(
        *(
            hours.credit(
                ctx,
                user_id=users[0],
                hours=2,
                org_id=ObjectId(),
                source="activity",
                activity_id=activity,
            )
            for _ in range(20)
        )
    )
    assert len(set(credits)) == 1 and await ctx.db.hours_ledger.count_documents({}) == 1


async def test_concurrent_additions_to_one_volunteer_move_the_count_exactly(ctx):
    """Additions crossing zero again and again at once: the moves they report add up to whether
    the volunteer counts at the end, as the recount would say."""
    rng = random.Random(7)
    user, org = ObjectId(), ObjectId()
    for _ in range(3):
        values = [rng.choice([2.5, -2.5, 1.0, -1.0, 0.5, -0.5]) for _ in range(60)]
        before = await ctx.db[rollups.VOLUNTEERS].find_one({})
        moves = await asyncio.gather(
            *(rollups._add_volunteer_hours(ctx, user, org, v, 2026) for v in values)
        )
        after = await ctx.db[rollups.VOLUNTEERS].find_one({})
        was = before is not None and before["hours"] > rollups.EPSILON
        assert after["hours"] == pytest.approx((before["hours"] if before else 0) + sum(values))
        assert sum(moves) == int(after["hours"] > rollups.EPSILON) - int(was)


def _matches(condition: dict, hours_now: float) -> bool:
    checks = {
        "$gt": hours_now.__gt__,
        "$gte": hours_now.__ge__,
        "$lte": hours_now.__le__,
    }
    return all(checks[op](bound) for op, bound in condition.items())


_HOURS = st.one_of(
    st.sampled_from([0.0, rollups.EPSILON, -rollups.EPSILON, 1e-7, 2.5, -2.5, 0.1 + 0.2]),
    st.floats(-50, 50, allow_nan=False),
)


@given(before=_HOURS, value=_HOURS.filter(bool), stored=_HOURS)
def test_the_condition_of_an_addition_keeps_its_outcome(before, value, stored):
    condition = rollups._same_outcome(before, value)
    assert _matches(condition, before)  # nothing changed: the addition goes through

    def outcome(hours_then: float) -> tuple[bool, bool]:
        return hours_then > rollups.EPSILON, hours_then + value > rollups.EPSILON

    if _matches(condition, stored):
        assert outcome(stored) == outcome(before)


async def test_leases_and_claims_keep_one_winner_without_scanning_shapes(ctx, login, commands):
    """Of many taking at once a lease or a claim that is free (never taken, given up, or run out),
    exactly one gets it, through conditional updates by `_id` alone."""
    lease, named = Lease(30, holder_field="holder", until_field="until"), {"_id": "scheduler"}

    async def winners(take, n: int = 20) -> int:
        return sum(bool(won) for won in await asyncio.gather(*(take(i) for i in range(n))))

    async def lead(i: int) -> bool:
        return await lease.acquire(ctx.db.leases, named, f"p{i}", ctx.clock.now(), upsert=True)

    with commands.watching("lease"):
        assert await winners(lead) == 1  # no document yet: one upsert wins
        [holder] = [d["holder"] async for d in ctx.db.leases.find(named)]
        assert await lead(int(holder[1:]))  # renewal
        ctx.clock.advance(31)
        assert await winners(lead) == 1  # run out
        holder = (await ctx.db.leases.find_one(named))["holder"]
        assert await lease.release(ctx.db.leases, named, holder, ctx.clock.now())
        assert await winners(lead) == 1  # given up

    open_request, stalled = ObjectId(), ObjectId()
    await ctx.db.visit_requests.insert_many(
        [
            {"_id": open_request, "status": "open"},
            {"_id": stalled, "status": "scheduling", "claim_until": ctx.clock.now()},
        ]
    )
    ctx.clock.advance(1)
    plan = ObjectId()
    with commands.watching("claims"):
        for request in (open_request, stalled):
            assert await winners(lambda i, r=request: caravans.claim_for_publish(ctx, r, plan)) == 1
        plans = ctx.db.plans
        await plans.insert_one({"_id": plan, "status": "done", "published_at": None})
        assert await winners(lambda i: publishing._claim(ctx, plan)) == 1
        ctx.clock.advance(6 * 60)  # the publisher stalled
        assert await winners(lambda i: publishing._claim(ctx, plan)) == 1

    assert commands.offending() == []
    assert commands.sent("lease") == {("update", "leases"), ("find", "leases")}
    assert ("update", "visit_requests") in commands.sent("claims")
    assert ("update", "plans") in commands.sent("claims")


async def test_concurrent_reach_reports_move_the_count_by_what_they_changed(ctx, login, commands):
    _, activity, starts_at, _ = await _an_activity_at_a_site(ctx, login)
    ctx.clock.advance((starts_at + timedelta(minutes=30) - ctx.clock.now()).total_seconds())
    deltas: list[int] = []

    async def reached(ctx, kind, **payload):
        deltas.append(payload["delta"])

    ctx.events.subscribe(events.ACTIVITY_REACHED, reached)
    reports = [activities.Reach(beneficiaries=n) for n in (120, 80, 300, 0, 45, 45, 200, 7)]
    with commands.watching("reach"):
        await asyncio.gather(*(activities.report_reach(ctx, activity, r) for r in reports))
    final = (await ctx.db.activities.find_one({"_id": ObjectId(activity)}))["beneficiaries"]
    assert final in {r.beneficiaries for r in reports} and sum(deltas) == final
    assert commands.offending() == []
    assert ("update", "activities") in commands.sent("reach")


async def test_staff_paths_send_no_scanning_shapes(ctx, commands):
    root = await orgs.create_org(ctx, "省科协", "province", None)
    city = await orgs.create_org(ctx, "新乡市科协", "city", root)
    county = await orgs.create_org(ctx, "辉县市科协", "county", city)
    other = await orgs.create_org(ctx, "郑州市科协", "city", root)
    reminder = ObjectId()
    await ctx.db.reminders.insert_one(
        {"_id": reminder, "state": "dead", "dedupe": "shape:dead", "attempts": 5}
    )
    with commands.watching("staff"):
        assert set(await orgs.subtree_ids(ctx, city)) == {city, county}
        assert await orgs.subtree_ids(ctx, ObjectId()) == []
        assert sorted(await orgs.subtrees(ctx, [city, county, other])) == sorted(
            [city, county, other]
        )
        await notifications.retry(ctx, str(reminder))
        with pytest.raises(NotFound):
            await notifications.retry(ctx, str(reminder))  # no longer dead
    assert (await ctx.db.reminders.find_one({"_id": reminder}))["state"] == "pending"
    assert commands.offending() == []
    assert {("find", "orgs"), ("update", "reminders")} <= commands.sent("staff")
