"""Kill -9 the service in the middle of a sign-up burst, twice: no seat is stranded.

A sign-up takes its seat and then writes its record; a service killed between the two leaves a
seat nobody holds. The repair at start (signup_repair.repair, in the background) finds the activity
touched, sees the same difference at two looks a settle apart, recounts, and gives the free
seats to the head of the waitlist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pymongo
import pytest
from bson import ObjectId

from server.db.embedded import free_port
from tests.procfs import alive, port_free, wait_until

pytestmark = pytest.mark.timeout(180)

VOLUNTEERS = 200
CAPACITY = 50
KILL_AFTER_S = 0.8
ACTIVE_PLACES = ("confirmed", "waitlisted")


def _admin_activity(svc) -> str:
    """As the bootstrap admin: a published activity of 50 places with a waitlist."""
    admin = svc.login("o_fault_admin")
    root = httpx.get(svc.url + "/api/v1/orgs", headers=admin).json()["items"][0]["id"]
    starts = datetime.now(UTC) + timedelta(days=3)
    body = {"title": "科技馆志愿讲解", "description": "周末讲解", "org_id": root,
            "starts_at": starts.isoformat(), "ends_at": (starts + timedelta(hours=3)).isoformat(),
            "capacity": CAPACITY, "waitlist": True}  # fmt: skip
    created = httpx.post(svc.url + "/api/v1/activities", json=body, headers=admin)
    assert created.status_code == 201, created.text
    activity = created.json()["id"]
    published = httpx.post(f"{svc.url}/api/v1/activities/{activity}/publish", headers=admin)
    assert published.status_code == 200, published.text
    return activity


async def _sign_in_all(svc, openids: list[str]) -> dict[str, dict[str, str]]:
    """user_id → headers, each signed in through the emulator as the mini-program would."""
    gate = asyncio.Semaphore(20)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(openid: str) -> tuple[str, dict[str, str]]:
            async with gate:
                code = await client.post(svc.emulator + "/__emulator__/jscode",
                                         json={"openid": openid})  # fmt: skip
                answer = await client.post(svc.url + "/mp/v1/auth/login",
                                           json={"code": code.json()["code"]})  # fmt: skip
                assert answer.status_code == 200, answer.text
                body = answer.json()
                return body["user"]["id"], {"Authorization": f"Bearer {body['token']}"}

        return dict(await asyncio.gather(*(one(o) for o in openids)))


async def _burst(svc, activity: str, people: dict[str, dict], *, kill: bool) -> dict[str, str]:
    """Every volunteer signs up at once; with `kill`, the service is killed KILL_AFTER_S in (or
    when half have an answer, whichever comes first). Returns the acknowledged: user_id → status.

    The connections are opened first and each request is a few bytes written on one: a client
    as heavy as httpx would spend the burst on its own CPU, on a machine the service shares."""
    acknowledged: dict[str, str] = {}
    answered = asyncio.Event()
    port = int(svc.env["IKEPU_PORT"])
    streams = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in people))
    go = asyncio.Event()

    async def one(user_id: str, headers: dict, reader, writer) -> None:
        request = (f"POST /mp/v1/activities/{activity}/signup HTTP/1.1\r\n"
                   f"Host: 127.0.0.1:{port}\r\nAuthorization: {headers['Authorization']}\r\n"
                   "Content-Length: 0\r\nConnection: close\r\n\r\n")  # fmt: skip
        await go.wait()
        try:
            writer.write(request.encode())
            answer = await reader.read()
        except OSError:
            return  # cut off by the kill: not acknowledged
        finally:
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        if head and int(head.split()[1]) in (200, 201):
            acknowledged[user_id] = json.loads(body)["status"]
        if len(acknowledged) >= len(people) // 2:
            answered.set()

    burst = [
        asyncio.create_task(one(u, h, *rw))
        for (u, h), rw in zip(people.items(), streams, strict=True)
    ]
    await asyncio.sleep(0)
    go.set()
    began = time.monotonic()
    if not kill:
        await asyncio.gather(*burst)
        assert len(acknowledged) == len(people), "a sign-up failed with the service up"
        return acknowledged
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(answered.wait(), KILL_AFTER_S)
    in_flight = sum(not t.done() for t in burst)
    everyone = svc.descendants()
    svc.kill()
    await asyncio.gather(*burst)
    print(f"killed {time.monotonic() - began:.2f}s in: {len(acknowledged)} acknowledged, "
          f"{in_flight} in flight")  # fmt: skip
    assert in_flight, "the kill came after the burst"
    assert wait_until(lambda: not any(alive(p) for p in everyone), 10), "a child outlived it"
    return acknowledged


def _logged(svc, event: str) -> list[dict]:
    return [e for e in svc.log_events() if e.get("event") == event]


def test_a_service_killed_mid_burst_twice_strands_no_seat(service):
    db_port = free_port()
    svc = service(IKEPU_EMBEDDED_DB_PORT=str(db_port))
    svc.wait_healthy()
    ports = [int(svc.env["IKEPU_PORT"]), int(svc.env["IKEPU_WECHAT_EMULATOR_PORT"]), db_port]
    activity = _admin_activity(svc)
    people = asyncio.run(_sign_in_all(svc, [f"o_burst_{i}" for i in range(VOLUNTEERS)]))
    acknowledged: dict[str, str] = {}
    for _ in range(2):
        acknowledged |= asyncio.run(_burst(svc, activity, people, kill=True))
        # The clients' half-closed connections to the dead service take a moment to go.
        assert wait_until(lambda: all(port_free(p) for p in ports), 10), "a port is still held"
        svc = service(IKEPU_EMBEDDED_DB_PORT=str(db_port))
        assert svc.wait_healthy(timeout_s=15) < 15
    # The repair at start runs beside serving; it has looked twice once it says so.
    assert wait_until(lambda: _logged(svc, "signup_repair_done"), 60, 0.5), "no repair ran"
    done = _logged(svc, "signup_repair_done")[0]
    assert done["checked"] >= 1 and done["busy"] == 0, done
    for fixed in _logged(svc, "signup_counters_repaired"):
        print("repaired:", fixed["before"], "→", fixed["after"])

    with pymongo.MongoClient(f"mongodb://127.0.0.1:{db_port}/?directConnection=true") as client:
        db = client["ikepu"]

        def state() -> tuple[dict, dict[str, dict]]:
            doc = db.activities.find_one({"_id": ObjectId(activity)})
            records = {str(r["user_id"]): r for r in db.signups.find(
                {"activity_id": ObjectId(activity)})}  # fmt: skip
            return doc, records

        def check() -> tuple[dict, dict[str, dict]]:
            doc, records = state()
            confirmed = [r for r in records.values() if r["status"] == "confirmed"]
            waiting = [r for r in records.values() if r["status"] == "waitlisted"]
            assert doc["confirmed_count"] == len(confirmed) <= CAPACITY, doc
            assert doc["waitlist_count"] == len(waiting), doc
            assert doc["seats_left"] == doc["capacity"] - doc["confirmed_count"], doc
            assert not (waiting and doc["seats_left"] > 0), "waitlisted behind a free seat"
            assert len({r["seq"] for r in waiting}) == len(waiting), "two share a waitlist place"
            return doc, records

        doc, records = check()
        for user_id, status in acknowledged.items():
            assert user_id in records, f"an acknowledged sign-up ({status}) is gone"
            held = records[user_id]["status"]
            assert held == "confirmed" if status == "confirmed" else held in ACTIVE_PLACES
        # Everyone signs up again with the service up: repeats get their record, the rest a
        # place, on the counters the repair left.
        asyncio.run(_burst(svc, activity, people, kill=False))
        doc, records = check()
        assert len(records) == VOLUNTEERS and doc["confirmed_count"] == CAPACITY

        # Afterwards everything works as before: a newcomer waits, a confirmed one leaves,
        # the head of the waitlist moves up.
        ((newcomer, headers),) = asyncio.run(_sign_in_all(svc, ["o_burst_late"])).items()
        late = httpx.post(f"{svc.url}/mp/v1/activities/{activity}/signup", headers=headers)
        assert late.status_code == 201 and late.json()["status"] == "waitlisted", late.text
        head = min((r for r in records.values() if r["status"] == "waitlisted"),
                   key=lambda r: r["seq"])  # fmt: skip
        leaving = next(u for u, r in records.items() if r["status"] == "confirmed")
        left = httpx.delete(f"{svc.url}/mp/v1/activities/{activity}/signup",
                            headers=people[leaving])  # fmt: skip
        assert left.status_code == 200, left.text
        doc, records = check()
        assert records[str(head["user_id"])]["status"] == "confirmed"
        assert records[newcomer]["status"] == "waitlisted"
        assert doc["confirmed_count"] == CAPACITY
