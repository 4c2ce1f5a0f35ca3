"""Fault tests run the service as an operator does (`python -m server`, its embedded database
and WeChat emulator as real processes) and really kill them. The service's log goes to a file,
so a long run never blocks on a full pipe, and the tests can read what it said."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from server.db.embedded import free_port
from tests.procfs import alive, children, cmdline, wait_until

ROOT = Path(__file__).resolve().parents[2]


class Service:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.url = f"http://127.0.0.1:{env['IKEPU_PORT']}"
        self.emulator = f"http://127.0.0.1:{env['IKEPU_WECHAT_EMULATOR_PORT']}"
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=log, stderr=log
            )

    def wait_healthy(self, timeout_s: float = 30.0) -> float:
        began = time.monotonic()

        def healthy() -> bool:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(healthy, timeout_s), "service did not become healthy"
        return time.monotonic() - began

    def descendants(self) -> list[int]:
        found, todo = [], [self.proc.pid]
        while todo:
            for child in children(todo.pop()):
                found.append(child)
                todo.append(child)
        return found

    def database_pids(self) -> list[int]:
        found = []
        for pid in children(self.proc.pid):
            if b"secantusd" in cmdline(pid) and alive(pid):
                found.append(pid)
        return found

    def database_pid(self) -> int:
        pids = self.database_pids()
        assert len(pids) == 1, pids
        return pids[0]

    def log_events(self) -> list[dict]:
        events = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
        return events

    def login(self, openid: str) -> dict[str, str]:
        code = httpx.post(f"{self.emulator}/__emulator__/jscode", json={"openid": openid})
        answer = httpx.post(f"{self.url}/mp/v1/auth/login", json={"code": code.json()["code"]})
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['token']}"}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def service(tmp_path):
    """Start the service (again, with the same data and ports, when called again)."""
    started: list[Service] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("IKEPU_")}
    env.update(
        IKEPU_PORT=str(free_port()),
        IKEPU_WECHAT_EMULATOR_PORT=str(free_port()),
        IKEPU_DATA_DIR=str(tmp_path / "var"),
        IKEPU_LOG_FORMAT="json",
        IKEPU_BOOTSTRAP_ADMIN_OPENID="o_fault_admin",
    )

    def start(**extra: str) -> Service:
        svc = Service({**env, **extra}, tmp_path / f"service-{len(started)}.log")
        started.append(svc)
        return svc

    yield start
    for svc in started:
        for pid in svc.descendants() if svc.proc.poll() is None else []:
            with __import__("contextlib").suppress(ProcessLookupError):
                os.kill(pid, 9)
        svc.kill()
