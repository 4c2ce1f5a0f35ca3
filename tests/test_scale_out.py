"""Three service processes on one embedded database (`python -m server --processes 3`, one port
each so every call goes where the test sends it): sign-ups, reminders, a plan, the WeChat token,
metrics and the caches, each spread over the three.

Solo: three service processes, a database and an emulator share the machine's two cores."""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import httpx
import pytest
from bson import ObjectId

from config import SettingsError, load_settings
from tests.procfs import wait_until
from tests.scale_out import Cluster, call, delivered, due_reminders, seats_agree

pytestmark = [pytest.mark.solo, pytest.mark.timeout(120)]

PROCESSES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    svc = Cluster(
        tmp_path_factory.mktemp("scale_out"),
        PROCESSES,
        "each",
        IKEPU_DISPATCH_INTERVAL_S="1",
    )
    try:
        svc.wait_ready()
        yield svc
    finally:
        svc.kill()


def test_three_processes_serve_beside_one_database_and_emulator(cluster):
    workers = cluster.workers()
    assert len(workers) == PROCESSES
    assert len(cluster.database_pids()) == 1, "one database, the supervisor's"
    for url in cluster.urls:
        assert httpx.get(url + "/healthz").json() == {"status": "ok", "db": "ok"}
    started = {e["pid"]: e["index"] for e in cluster.logged("worker_started")}
    assert sorted(started.values()) == list(range(PROCESSES))
    # Process 0 prepares the database alone; the others start once it is ready.
    ready_0 = next(e for e in cluster.logged("worker_ready") if e["index"] == 0)["timestamp"]
    assert all(e["timestamp"] > ready_0 for e in cluster.logged("worker_started") if e["index"])


def test_300_signups_for_50_places_over_three_processes(cluster):
    capacity, volunteers = 50, 300
    activity = cluster.activity(capacity)
    people = asyncio.run(cluster.sign_in_all([f"o_so_{i}" for i in range(volunteers)]))
    tokens = list(people.values())

    async def burst():
        path = f"/mp/v1/activities/{activity}/signup"
        return await asyncio.gather(
            *(call(cluster.ports[i % PROCESSES], "POST", path, t) for i, t in enumerate(tokens))
        )

    answers = asyncio.run(burst())
    assert all(a is not None and a[0] == 201 for a in answers), [a for a in answers if a][:3]
    statuses = collections.Counter(body["status"] for _, body in answers)
    assert statuses == {"confirmed": capacity, "waitlisted": volunteers - capacity}
    with cluster.database() as client:
        db = client.ikepu
        doc, records = seats_agree(db, activity, capacity)
        assert (doc["confirmed_count"], doc["waitlist_count"]) == (50, 250)
        waiting = sorted(
            (r for r in records if r["status"] == "waitlisted"), key=lambda r: r["seq"]
        )
        # Five leave at once, through the three processes: the five at the head move up.
        leaving = [str(r["user_id"]) for r in records if r["status"] == "confirmed"][:5]

        async def leave():
            path = f"/mp/v1/activities/{activity}/signup"
            return await asyncio.gather(
                *(call(cluster.ports[i % PROCESSES], "DELETE", path, people[u])
                  for i, u in enumerate(leaving))
            )  # fmt: skip

        assert all(a is not None and a[0] == 200 for a in asyncio.run(leave()))
        _, records = seats_agree(db, activity, capacity)
        now = {r["user_id"]: r["status"] for r in records}
        assert [now[r["user_id"]] for r in waiting[:5]] == ["confirmed"] * 5
        assert {now[r["user_id"]] for r in waiting[5:]} == {"waitlisted"}
        positions = sorted(r["seq"] for r in records if r["status"] == "waitlisted")
        assert positions == [r["seq"] for r in waiting[5:]], "the waitlist kept its order"


def test_2000_reminders_due_are_delivered_once_and_the_token_fetched_once(cluster):
    # A phone bound through each process at once: each needs WeChat's access token.
    people = asyncio.run(cluster.sign_in_all([f"o_phone_{i}" for i in range(PROCESSES)]))
    with ThreadPoolExecutor(PROCESSES) as pool:

        def bind(i: int, token: str) -> httpx.Response:
            phone = {"openid": f"o_phone_{i}", "phone": f"138000000{i:02}"}
            code = httpx.post(cluster.emulator + "/__emulator__/phonecode", json=phone)
            return httpx.post(cluster.urls[i] + "/mp/v1/auth/phone", timeout=30,
                              json={"code": code.json()["code"]},
                              headers={"Authorization": f"Bearer {token}"})  # fmt: skip

        bound = list(pool.map(bind, range(PROCESSES), people.values()))
    assert [r.status_code for r in bound] == [200] * PROCESSES, [r.text for r in bound]

    with cluster.database() as client:
        db = client.ikepu
        expected = asyncio.run(due_reminders(cluster, db, 2000, "o_due_"))
        began = time.monotonic()
        assert wait_until(lambda: len(delivered(cluster, "o_due_")) == 2000, 60, 0.5), len(
            delivered(cluster, "o_due_")
        )
        print(f"2,000 reminders delivered in {time.monotonic() - began:.1f}s")
        time.sleep(2)  # time for any second delivery to show
        counts = delivered(cluster, "o_due_")
        assert set(counts) == expected
        assert [o for o, n in counts.items() if n > 1] == [], "a reminder was delivered twice"
        ours = {"dedupe": {"$regex": "^o_due_:"}}

        def states() -> collections.Counter:
            return collections.Counter(r["state"] for r in db.reminders.find(ours, {"state": 1}))

        # Each is recorded sent once WeChat's answer is in.
        assert wait_until(lambda: states() == {"sent": 2000}, 20, 0.5), states()
        dispatchers = {e["holder"] for e in cluster.logged("scheduler_started")}
        assert len(dispatchers) == PROCESSES, "every process runs the scheduler; one dispatches"
    stats = httpx.get(cluster.emulator + "/__emulator__/stats").json()
    assert stats["calls"]["stable_token"] == 1, stats["calls"]
    assert stats["calls"]["token"] == 0


def test_a_plan_requested_twice_through_two_processes_is_solved_once(cluster):
    admin = cluster.admin()

    def post(path: str, body: dict, via: int = 0, **headers: str) -> httpx.Response:
        return httpx.post(cluster.urls[via] + path, json=body, headers={**admin, **headers},
                          timeout=60)  # fmt: skip

    def made(path: str, body: dict) -> str:
        answer = post(path, body)
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    root = httpx.get(cluster.url + "/api/v1/orgs", headers=admin).json()["items"][0]["id"]
    county = made("/api/v1/orgs", {"name": "辉县市科协", "kind": "city", "parent_id": root})
    point = {"lng": 113.805, "lat": 35.462}
    depot = made("/api/v1/depots", {"name": "车场", "org_id": county, "location": point})
    made("/api/v1/caravans", {"name": "一号车", "plate": "豫G00001", "vehicle_type": "Ⅱ",
                              "depot_id": depot, "org_id": county})  # fmt: skip
    monday = date.today() + timedelta(days=7 - date.today().weekday() + 7)
    for n, (lng, lat) in enumerate([(113.84, 35.49), (113.78, 35.44), (113.86, 35.41)]):
        site = made("/api/v1/sites", {"name": f"第{n + 1}小学", "kind": "school", "org_id": county,
                                      "location": {"lng": lng, "lat": lat}})  # fmt: skip
        made("/api/v1/visit-requests", {"site_id": site, "earliest_date": str(monday),
                                        "latest_date": str(monday + timedelta(days=4)),
                                        "duration_min": 90})  # fmt: skip
    body = {"org_id": county, "start_date": str(monday),
            "end_date": str(monday + timedelta(days=4)), "time_limit_s": 1}  # fmt: skip
    # The same request (one Idempotency-Key) sent through two processes at the same moment.
    key = str(ObjectId())
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda via: post("/api/v1/plans", body, via,
                                                 **{"Idempotency-Key": key}), (0, 1)))  # fmt: skip
    ids = {a.json()["id"] for a in answers if a.status_code == 202}
    codes = sorted(a.status_code for a in answers)
    assert len(ids) == 1 and codes in ([202, 202], [202, 409]), [a.text for a in answers]
    plan = ids.pop()

    def status(via: int) -> str:
        doc = httpx.get(f"{cluster.urls[via]}/api/v1/plans/{plan}", headers=admin).json()
        assert doc["status"] != "failed", doc
        return doc["status"]

    # Read meanwhile through the third process, which could take a plan it finds stale.
    assert wait_until(lambda: status(2) == "done", 60, 0.3)
    # Asked again through two processes at once: one re-plans, the other is told it runs.
    with ThreadPoolExecutor(2) as pool:
        again = list(pool.map(lambda via: post(f"/api/v1/plans/{plan}/replan", {}, via), (1, 2)))
    assert sorted(a.status_code for a in again) == [202, 409], [a.text for a in again]
    assert wait_until(lambda: status(0) == "done", 60, 0.3)

    with cluster.database() as client:
        db = client.ikepu
        assert db.plans.count_documents({"org_id": ObjectId(county)}) == 1
        doc = db.plans.find_one({"_id": ObjectId(plan)})
        assert doc["runs"] == 2 and doc["attempts"] == 1, (doc["runs"], doc["attempts"])
    assert wait_until(lambda: len(_plan_done(cluster, plan)) == 2, 10), _plan_done(cluster, plan)


def _plan_done(cluster: Cluster, plan: str) -> list[dict]:
    return [e for e in cluster.logged("plan_done") if e.get("plan_id") == plan]


def test_metrics_on_any_process_add_up_over_all(cluster):
    def served(via: int) -> float:
        text = httpx.get(cluster.urls[via] + "/metrics").text
        for line in text.splitlines():
            wanted = ('route="/healthz"', 'status="200"', 'method="GET"')
            if line.startswith("ikepu_http_requests_total{") and all(w in line for w in wanted):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = [served(i) for i in range(PROCESSES)]
    assert len(set(before)) == 1, before
    for via, count in enumerate((3, 5, 7)):
        for _ in range(count):
            assert httpx.get(cluster.urls[via] + "/healthz").status_code == 200
    after = [served(i) for i in range(PROCESSES)]
    assert after == [before[0] + 15] * PROCESSES, (before, after)
    text = httpx.get(cluster.urls[0] + "/metrics").text
    names = [line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"]
    assert not any(n.startswith("process_") for n in names), "per-process samples are not summed"
    helps = [line for line in text.splitlines() if line.startswith("# HELP ikepu_http_requests")]
    assert len(helps) == 1, "each metric once, not once per process"


def test_a_signed_out_session_and_a_revoked_role_end_everywhere(cluster):
    """Sign-out: within SessionCache's 3 s in the other processes. A revoked role: at once."""
    people = asyncio.run(cluster.sign_in_all(["o_leaver"]))
    (token,) = people.values()
    me = [call(p, "GET", "/mp/v1/me", token) for p in cluster.ports]

    async def everywhere(requests):
        return [a[0] if a else None for a in await asyncio.gather(*requests)]

    assert asyncio.run(everywhere(me)) == [200] * PROCESSES  # each process remembers it live
    out = httpx.post(cluster.urls[0] + "/mp/v1/auth/logout", json={},
                     headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert out.status_code == 200, out.text
    signed_out = time.monotonic()

    def refused_everywhere() -> bool:
        answers = asyncio.run(
            everywhere([call(p, "GET", "/mp/v1/me", token) for p in cluster.ports])
        )
        return answers == [401] * PROCESSES

    assert wait_until(refused_everywhere, 5, 0.2)
    assert time.monotonic() - signed_out <= 3.5

    admin = cluster.admin()
    root = httpx.get(cluster.url + "/api/v1/orgs", headers=admin).json()["items"][0]["id"]
    staff = asyncio.run(cluster.sign_in_all(["o_dispatcher"]))
    ((staff_id, staff_token),) = staff.items()
    granted = httpx.post(f"{cluster.urls[0]}/api/v1/orgs/{root}/roles", headers=admin,
                         json={"user_id": staff_id, "role": "dispatcher"})  # fmt: skip
    assert granted.status_code in (200, 201), granted.text
    bearer = {"Authorization": f"Bearer {staff_token}"}
    for url in cluster.urls:
        assert httpx.get(url + "/api/v1/caravans", headers=bearer).status_code == 200
    revoked = httpx.delete(f"{cluster.urls[0]}/api/v1/orgs/{root}/roles/{staff_id}/dispatcher",
                           headers=admin)  # fmt: skip
    assert revoked.status_code in (200, 204), revoked.text
    for url in cluster.urls:
        assert httpx.get(url + "/api/v1/caravans", headers=bearer).status_code == 403


def test_the_development_clock_is_refused_with_several_processes():
    with pytest.raises(SettingsError, match="IKEPU_DEV_CLOCK"):
        load_settings({"IKEPU_PROCESSES": "2", "IKEPU_DEV_CLOCK": "1"})
    with pytest.raises(SettingsError, match="IKEPU_PORT"):
        load_settings({"IKEPU_PORT": "65535",
                       "IKEPU_PROCESSES": "3", "IKEPU_PROCESS_PORTS": "each"})  # fmt: skip
    assert load_settings({"IKEPU_PROCESSES": "4"}).process_ports == "shared"
