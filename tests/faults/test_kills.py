"""Kill -9 the service after it has planned, and the database under load: what survives."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import date, timedelta

import httpx

from tests.procfs import alive, cmdline, port_free, wait_until


def _plan_once(svc) -> None:
    """As the bootstrap admin: a county with a depot, a caravan and a school asking for a
    visit, planned (so the pool's workers and the progress manager have run)."""
    admin = svc.login("o_fault_admin")

    def post(path: str, body: dict, status: int = 201) -> dict:
        answer = httpx.post(svc.url + path, json=body, headers=admin, timeout=30)
        assert answer.status_code == status, answer.text
        return answer.json()

    root = httpx.get(svc.url + "/api/v1/orgs", headers=admin).json()["items"][0]["id"]
    county = post("/api/v1/orgs", {"name": "辉县市科协", "kind": "city", "parent_id": root})["id"]
    point = {"lng": 113.805, "lat": 35.462}
    depot = post("/api/v1/depots", {"name": "车场", "org_id": county, "location": point})["id"]
    caravan = {"name": "一号车", "plate": "豫G00001", "vehicle_type": "Ⅱ", "depot_id": depot,
               "org_id": county}  # fmt: skip
    post("/api/v1/caravans", caravan)
    school = {"name": "第一小学", "kind": "school", "org_id": county,
              "location": {"lng": 113.84, "lat": 35.49}}  # fmt: skip
    site = post("/api/v1/sites", school)["id"]
    monday = date.today() + timedelta(days=7 - date.today().weekday() + 7)
    post("/api/v1/visit-requests", {"site_id": site, "earliest_date": str(monday),
                                    "latest_date": str(monday + timedelta(days=4)),
                                    "duration_min": 90})  # fmt: skip
    plan = post("/api/v1/plans", {"org_id": county, "start_date": str(monday),
                                  "end_date": str(monday + timedelta(days=4)),
                                  "time_limit_s": 1}, status=202)["id"]  # fmt: skip

    def solved() -> bool:
        doc = httpx.get(f"{svc.url}/api/v1/plans/{plan}", headers=admin).json()
        assert doc["status"] != "failed", doc
        return doc["status"] == "done"

    assert wait_until(solved, 60, 0.5)


def test_a_service_killed_after_planning_leaves_nothing_behind_and_restarts(service):
    first = service()
    first.wait_healthy()
    _plan_once(first)
    everyone = first.descendants()
    workers = [p for p in everyone if b"secantusd" not in cmdline(p)]
    assert workers, "the plan ran in child processes"
    ports = [int(first.env["IKEPU_PORT"]), int(first.env["IKEPU_WECHAT_EMULATOR_PORT"])]
    first.kill()
    assert wait_until(lambda: not any(alive(p) for p in everyone), 10), "children outlived it"
    assert all(port_free(p) for p in ports), "a child still holds the service's ports"
    again = service()
    assert again.wait_healthy(timeout_s=15) < 15


def test_the_database_killed_under_load_is_restarted_and_calls_recover(service):
    svc = service()
    svc.wait_healthy()
    volunteer = svc.login("o_fault_volunteer")
    named = httpx.patch(svc.url + "/mp/v1/me", json={"real_name": "李明"}, headers=volunteer)
    assert named.status_code == 200
    answers: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.get(svc.url + "/mp/v1/me/signups", headers=volunteer)
                    code = r.json().get("error", {}).get("code", "") if r.status_code >= 400 else ""
                    answers.append((time.monotonic(), r.status_code, code))
                except httpx.HTTPError as exc:
                    answers.append((time.monotonic(), 0, type(exc).__name__))
                time.sleep(0.05)

    health: list[dict] = []

    def watch() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    health.append(client.get(svc.url + "/healthz").json())
                time.sleep(0.05)

    worker, watcher = threading.Thread(target=load), threading.Thread(target=watch)
    worker.start()
    watcher.start()
    try:
        time.sleep(1)
        database = svc.database_pid()
        killed_at = time.monotonic()
        __import__("os").kill(database, 9)
        restarted = lambda: svc.database_pids() not in ([], [database])  # noqa: E731
        assert wait_until(restarted, 20), "never restarted"
        assert wait_until(lambda: answers and answers[-1][1] == 200, 20), answers[-5:]
    finally:
        stop.set()
        worker.join()
        watcher.join()
    assert svc.proc.poll() is None, "the service itself kept running"
    # While the database was down, /healthz said so rather than failing or claiming "ok".
    assert {"status": "degraded", "db": "restarting"} in health, health[-5:]
    # A call that met the outage got a clear 503; most were retried by the driver unseen.
    during = [a for a in answers if a[0] > killed_at and a[1] != 200]
    assert {(status, code) for _, status, code in during} <= {(503, "unavailable")}, during
    me = httpx.get(svc.url + "/mp/v1/me", headers=volunteer).json()
    assert me["real_name"] == "李明", "the data directory was kept"

    def logged(event: str) -> list[dict]:
        return [e for e in svc.log_events() if e.get("event") == event]

    # The service's log reaches its file a little after the fact.
    assert wait_until(lambda: logged("embedded_db_restarted"), 10), "the restart was logged"
    exits = logged("embedded_db_exited")
    assert exits and exits[0]["returncode"] == -9 and exits[0]["pid"] == database
    health = httpx.get(svc.url + "/healthz").json()
    assert health == {"status": "ok", "db": "ok"}
