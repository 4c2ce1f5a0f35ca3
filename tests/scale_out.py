"""What the scale-out tests share: the service run as `python -m server --processes N` (its
supervisor, N service processes, one embedded database and one emulator, all real processes),
and clients light enough that the service, not the client, spends the machine's two cores."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pymongo
from bson import ObjectId

from server.db.embedded import free_port
from tests.faults.conftest import Service
from tests.procfs import alive, children, cmdline, port_free

TEMPLATE = "tmpl_activity_reminder"  # settings.template_activity_reminder


def consecutive_free_ports(count: int) -> int:
    """The first of `count` free consecutive ports (IKEPU_PROCESS_PORTS=each)."""
    while True:
        first = free_port()
        if first + count <= 65535 and all(port_free(first + i) for i in range(count)):
            return first


class Cluster(Service):
    """The supervisor and its processes; `ports` are where they listen (one, when shared)."""

    def __init__(self, tmp_path: Path, processes: int, mode: str, **extra: str) -> None:
        self.processes = processes
        base = int(extra.pop("IKEPU_PORT", 0)) or (
            consecutive_free_ports(processes) if mode == "each" else free_port()
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("IKEPU_")}
        env.update(
            IKEPU_PROCESSES=str(processes),
            IKEPU_PROCESS_PORTS=mode,
            IKEPU_PORT=str(base),
            IKEPU_WECHAT_EMULATOR_PORT=str(free_port()),
            IKEPU_DATA_DIR=str(tmp_path / "var"),
            IKEPU_LOG_FORMAT="json",
            IKEPU_BOOTSTRAP_ADMIN_OPENID="o_scale_admin",
            **extra,
        )
        self.ports = [base + i for i in range(processes)] if mode == "each" else [base]
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        super().__init__(env, tmp_path / f"cluster-{time.monotonic_ns()}.log")

    def workers(self) -> list[int]:
        """The service processes alive now (the supervisor's children running `worker`)."""
        found = []
        for pid in children(self.proc.pid):
            if b"server\0worker" in cmdline(pid) and alive(pid):
                found.append(pid)
        return sorted(found)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Every process started and ready (the supervisor logs `listening` then)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            if any(e.get("event") == "listening" and "processes" in e for e in self.log_events()):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the processes did not all become ready")
        self.wait_healthy()

    def database(self):
        args = cmdline(self.database_pid()).split(b"\0")
        port = args[args.index(b"--port") + 1].decode()
        return pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true")

    def logged(self, event: str) -> list[dict]:
        return [e for e in self.log_events() if e.get("event") == event]

    def admin(self, via: int = 0) -> dict[str, str]:
        code = httpx.post(f"{self.emulator}/__emulator__/jscode", json={"openid": "o_scale_admin"})
        answer = httpx.post(
            f"{self.urls[via]}/mp/v1/auth/login", json={"code": code.json()["code"]}
        )
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['token']}"}

    def activity(self, capacity: int) -> str:
        """As the bootstrap admin: a published activity with `capacity` places and a waitlist."""
        admin = self.admin()
        root = httpx.get(self.url + "/api/v1/orgs", headers=admin).json()["items"][0]["id"]
        starts = datetime.now(UTC) + timedelta(days=3)
        ends = starts + timedelta(hours=3)
        body = {"title": "全国科普日 科技馆志愿讲解", "description": "讲解", "org_id": root,
                "starts_at": starts.isoformat(), "ends_at": ends.isoformat(),
                "capacity": capacity, "waitlist": True}  # fmt: skip
        created = httpx.post(self.url + "/api/v1/activities", json=body, headers=admin)
        assert created.status_code == 201, created.text
        activity = created.json()["id"]
        published = httpx.post(f"{self.url}/api/v1/activities/{activity}/publish", headers=admin)
        assert published.status_code == 200, published.text
        return activity

    async def sign_in_all(self, openids: list[str]) -> dict[str, str]:
        """user_id → access token, the logins spread over the processes."""
        gate = asyncio.Semaphore(16)
        async with httpx.AsyncClient(timeout=60) as client:

            async def one(i: int, openid: str) -> tuple[str, str]:
                async with gate:
                    code = await client.post(self.emulator + "/__emulator__/jscode",
                                             json={"openid": openid})  # fmt: skip
                    answer = await client.post(self.urls[i % len(self.urls)] + "/mp/v1/auth/login",
                                               json={"code": code.json()["code"]})  # fmt: skip
                    assert answer.status_code == 200, answer.text
                    return answer.json()["user"]["id"], answer.json()["token"]

            return dict(await asyncio.gather(*(one(i, o) for i, o in enumerate(openids))))


async def call(port: int, method: str, path: str, token: str, timeout_s: float = 60.0):
    """One request on a connection of its own, written as a few bytes: (status, body), or None
    when the connection broke first (refused, reset: a process killed)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    try:
        writer.write(request.encode())
        answer = await asyncio.wait_for(reader.read(), timeout_s)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head:
        return None
    status = int(head.split()[1])
    return status, json.loads(body) if body else None


def seats_agree(db, activity: str, capacity: int) -> tuple[dict, list[dict]]:
    """The activity's counters equal its records, never oversold, nobody waiting behind a
    free seat, no two on one waitlist place; (the activity, its records)."""
    doc = db.activities.find_one({"_id": ObjectId(activity)})
    records = list(db.signups.find({"activity_id": ObjectId(activity)}))
    confirmed = [r for r in records if r["status"] == "confirmed"]
    waiting = [r for r in records if r["status"] == "waitlisted"]
    assert doc["confirmed_count"] == len(confirmed) <= capacity, doc
    assert doc["waitlist_count"] == len(waiting), doc
    assert doc["seats_left"] == capacity - len(confirmed), doc
    assert not (waiting and doc["seats_left"] > 0), "waitlisted behind a free seat"
    assert len({r["seq"] for r in waiting}) == len(waiting), "two share a waitlist place"
    return doc, records


async def due_reminders(cluster: Cluster, db, count: int, prefix: str) -> set[str]:
    """`count` reminders due now, each to a user who accepted one message at WeChat (the
    emulator); written straight into the collections (the subject is dispatch, not setup).
    Returns their openids."""
    users = [ObjectId() for _ in range(count)]
    openids = [f"{prefix}{i}" for i in range(count)]
    db.subscriptions.insert_many(
        [{"_id": f"{u}:{TEMPLATE}", "user_id": u, "template_id": TEMPLATE, "remaining": 1}
         for u in users]
    )  # fmt: skip
    gate = asyncio.Semaphore(32)
    async with httpx.AsyncClient(timeout=30) as client:

        async def accept(openid: str) -> None:
            async with gate:
                answer = await client.post(
                    cluster.emulator + "/__emulator__/subscriptions",
                    json={"openid": openid, "accepted": [TEMPLATE]},
                )
                assert answer.status_code == 200, answer.text

        await asyncio.gather(*(accept(o) for o in openids))
    now = datetime.now(UTC)
    db.reminders.insert_many(
        [{"user_id": u, "openid": o, "template_key": "activity_reminder", "template_id": TEMPLATE,
          "page": "pages/index", "data": {"thing1": {"value": "全国科普日"}}, "due_at": now,
          "state": "pending", "attempts": 0, "dedupe": f"{prefix}:{i}"}
         for i, (u, o) in enumerate(zip(users, openids, strict=True))]
    )  # fmt: skip
    return set(openids)


def delivered(cluster: Cluster, prefix: str) -> dict[str, int]:
    """Messages the emulator received, by openid, for the openids starting with `prefix`."""
    items = httpx.get(cluster.emulator + "/__emulator__/messages", timeout=30).json()["items"]
    counts: dict[str, int] = {}
    for message in items:
        if message["touser"].startswith(prefix):
            counts[message["touser"]] = counts.get(message["touser"], 0) + 1
    return counts
