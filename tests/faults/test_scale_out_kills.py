"""Three service processes on one port (SO_REUSEPORT) under a supervisor: one killed with
SIGKILL under load, the supervisor stopped with SIGTERM and killed with SIGKILL, a start that
cannot listen. Solo: they measure what survives on a machine of two cores."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import socket
import threading
import time

import httpx
import pytest

from tests.procfs import alive, port_free, wait_until
from tests.scale_out import Cluster, call, delivered, due_reminders, seats_agree

pytestmark = [pytest.mark.solo, pytest.mark.timeout(180)]

PROCESSES = 3
CAPACITY = 50
VOLUNTEERS = 150
REMINDERS = 1000
IN_FLIGHT = 24


@pytest.fixture
def clusters(tmp_path):
    started: list[Cluster] = []

    def start(mode: str = "shared", **extra: str) -> Cluster:
        svc = Cluster(tmp_path, PROCESSES, mode, **extra)
        started.append(svc)
        return svc

    yield start
    for svc in started:
        for pid in svc.descendants() if svc.proc.poll() is None else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        svc.kill()


async def _load(
    port: int, activity: str, tokens: list[str], log: list, quarter: asyncio.Event | None = None
) -> None:
    """Every volunteer signs up, IN_FLIGHT at a time; `log` gets (when, token, answer), and
    `quarter` is set once a quarter of them have an answer."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(token: str) -> None:
        async with gate:
            answer = await call(port, "POST", f"/mp/v1/activities/{activity}/signup", token, 30)
            log.append((time.monotonic(), token, answer))
            if quarter is not None and len(log) >= len(tokens) // 4:
                quarter.set()

    await asyncio.gather(*(one(t) for t in tokens))


def test_one_of_three_killed_under_load_the_rest_answer_and_nothing_is_lost(clusters):
    svc = clusters(IKEPU_DISPATCH_INTERVAL_S="1", IKEPU_SCHEDULER_LEASE_S="3",
                   IKEPU_REMINDER_CLAIM_S="3")  # fmt: skip
    svc.wait_ready()
    port = svc.ports[0]
    activity = svc.activity(CAPACITY)
    people = asyncio.run(svc.sign_in_all([f"o_kill_{i}" for i in range(VOLUNTEERS)]))
    tokens = list(people.values())
    client = svc.database()
    db = client.ikepu
    try:
        httpx.post(svc.emulator + "/__emulator__/config", json={"latency_ms": 150})
        expected = asyncio.run(due_reminders(svc, db, REMINDERS, "o_rem_"))
        assert wait_until(lambda: len(delivered(svc, "o_rem_")) >= 20, 60, 0.2), "none sent"
        # The process dispatching them (the scheduler lease's holder) is the one killed.
        victim = int(db.leases.find_one({"_id": "scheduler"})["holder"].split(":")[1])
        assert victim in svc.workers()
        answers: list = []

        async def load_and_kill() -> float:
            quarter = asyncio.Event()
            burst = asyncio.ensure_future(_load(port, activity, tokens, answers, quarter))
            await quarter.wait()
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            await burst
            return killed

        killed_at = asyncio.run(load_and_kill())
        sent_at_kill = len(delivered(svc, "o_rem_"))
        assert sent_at_kill < REMINDERS, "the dispatch was over before the kill"
        # The others kept answering: sign-ups were acknowledged after the kill.
        after = [a for t, _, a in answers if t > killed_at and a and a[0] in (200, 201)]
        lost = [a for _, _, a in answers if not (a and a[0] in (200, 201))]
        print(f"killed {victim}: {len(after)} acknowledged after it, {len(lost)} failed, "
              f"{sent_at_kill} reminders sent before it")  # fmt: skip
        assert after, "no sign-up was acknowledged once one process was killed"
        assert all(a is None or a[0] == 503 for a in lost), lost[:3]

        # The dead one is restarted with its index; it repairs what the kill left behind.
        exited = next(e for e in svc.logged("worker_exited") if e["pid"] == victim)
        assert exited["returncode"] == -signal.SIGKILL
        assert wait_until(lambda: any(e["index"] == exited["index"]
                                      for e in svc.logged("worker_restarted")), 30)  # fmt: skip
        restarted = next(e for e in svc.logged("worker_restarted"))["pid"]
        assert wait_until(lambda: len(svc.workers()) == PROCESSES, 10)
        assert victim not in svc.workers() and restarted in svc.workers()
        assert wait_until(lambda: any(e.get("event") == "signup_repair_done"
                                      and e["timestamp"] > exited["timestamp"]
                                      for e in svc.log_events()), 90, 0.5)  # fmt: skip

        # Nothing acknowledged is lost; the counters are the records'.
        _, records = seats_agree(db, activity, CAPACITY)
        held = {str(r["user_id"]): r["status"] for r in records}
        user_of = {t: u for u, t in people.items()}
        for _, token, answer in answers:
            if answer and answer[0] in (200, 201):
                assert held.get(user_of[token]) in ("confirmed", "waitlisted"), answer
        # Those cut off try again: everyone has a place, on counters that still agree.
        again: list = []
        asyncio.run(_load(port, activity, tokens, again))
        assert all(a and a[0] in (200, 201) for _, _, a in again), [a for *_, a in again][:3]
        doc, records = seats_agree(db, activity, CAPACITY)
        assert len(records) == VOLUNTEERS and doc["confirmed_count"] == CAPACITY

        # Every reminder arrives once: the dead dispatcher's claims are taken over.
        assert wait_until(lambda: len(delivered(svc, "o_rem_")) == REMINDERS, 90, 0.5)
        time.sleep(2)
        counts = delivered(svc, "o_rem_")
        assert set(counts) == expected
        assert [o for o, n in counts.items() if n > 1] == [], "delivered twice"
        ours = {"dedupe": {"$regex": "^o_rem_:"}}

        def states() -> collections.Counter:
            return collections.Counter(r["state"] for r in db.reminders.find(ours, {"state": 1}))

        assert wait_until(lambda: states() == {"sent": REMINDERS}, 30, 0.5), states()
    finally:
        client.close()


def test_sigterm_drains_every_process_and_sigkill_of_the_supervisor_takes_all(clusters):
    svc = clusters()
    svc.wait_ready()
    everyone = svc.descendants()
    assert len(svc.workers()) == PROCESSES and len(svc.database_pids()) == 1
    code = httpx.post(svc.emulator + "/__emulator__/jscode", json={"openid": "o_late"})
    httpx.post(svc.emulator + "/__emulator__/faults",
               json={"api": "jscode2session", "delay_ms": 1500, "count": 1})  # fmt: skip
    answers: list[httpx.Response] = []
    body = {"code": code.json()["code"]}
    login = threading.Thread(target=lambda: answers.append(
        httpx.post(svc.url + "/mp/v1/auth/login", json=body, timeout=20)))  # fmt: skip
    login.start()
    time.sleep(0.5)
    svc.proc.send_signal(signal.SIGTERM)
    login.join(timeout=20)
    assert svc.proc.wait(timeout=30) == 0
    assert answers and answers[0].status_code == 200, "the request in flight was finished"
    assert wait_until(lambda: not any(alive(p) for p in everyone), 10), "a child outlived it"
    # The database stops after the last service process, the supervisor after it.
    stops = sorted(e["timestamp"] for e in svc.logged("stopped"))
    (db_stopped,) = (e["timestamp"] for e in svc.logged("embedded_db_stopped"))
    assert len(stops) == PROCESSES + 1
    assert max(stops[:PROCESSES]) < db_stopped < stops[-1]

    again = clusters()
    again.wait_ready()
    everyone = again.descendants()
    again.proc.kill()
    again.proc.wait()
    assert wait_until(lambda: not any(alive(p) for p in everyone), 10), "a child outlived it"
    assert wait_until(lambda: port_free(again.ports[0]), 10), "the port is still held"


def test_a_port_in_use_stops_the_start_with_exit_code_1(clusters):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        svc = clusters(IKEPU_PORT=str(taken.getsockname()[1]))
        assert svc.proc.wait(timeout=60) == 1
    assert svc.logged("cannot_listen") and svc.logged("worker_failed_to_start"), "it says why"
    assert svc.logged("embedded_db_stopped"), "the database stopped with it"
