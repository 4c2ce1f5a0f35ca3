"""The service as an operator runs it: `python -m server` in its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from server.db.embedded import free_port
from tests.procfs import alive, children, cmdline, wait_until

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IKEPU_")}
    env.update(
        IKEPU_PORT=str(free_port()),
        IKEPU_WECHAT_EMULATOR_PORT=str(free_port()),
        IKEPU_DATA_DIR=str(tmp_path / "var"),
        IKEPU_LOG_FORMAT="json",
    )
    env.update(extra)
    return env


class Service:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.url = f"http://127.0.0.1:{env['IKEPU_PORT']}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read().decode()
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("service did not become healthy")

    def database_pid(self) -> int:
        pids = [p for p in children(self.proc.pid) if b"secantusd" in cmdline(p)]
        assert len(pids) == 1, pids
        return pids[0]

    def database_uri(self) -> str:
        args = cmdline(self.database_pid()).split(b"\0")
        port = args[args.index(b"--port") + 1].decode()
        return f"mongodb://127.0.0.1:{port}/?directConnection=true"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def service(tmp_path):
    started: list[Service] = []

    def start(**extra: str) -> Service:
        svc = Service(_env(tmp_path, **extra))
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.kill()


def test_invalid_setting_stops_at_once_naming_it(tmp_path):
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        env=_env(tmp_path, IKEPU_PORT="bad"),
        capture_output=True,
        timeout=20,
    )
    assert done.returncode != 0
    assert "IKEPU_PORT" in done.stderr.decode()
    assert time.monotonic() - began < 10
    assert not (tmp_path / "var").exists(), "nothing may start before settings are valid"


def test_sigterm_stops_everything_and_exits_zero(service):
    svc = service()
    svc.wait_healthy()
    db_pid = svc.database_pid()
    began = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(timeout=15) == 0
    assert time.monotonic() - began < 15
    gone = wait_until(lambda: not alive(db_pid), 5, 0.05)
    assert gone, "the embedded database outlived the service"


def test_sigkill_of_the_service_takes_the_database_with_it(service):
    svc = service()
    svc.wait_healthy()
    db_pid = svc.database_pid()
    svc.proc.kill()
    svc.proc.wait()
    gone = wait_until(lambda: not alive(db_pid), 10, 0.05)
    assert gone, "the embedded database outlived a SIGKILLed service"


def test_a_second_run_finds_the_data_of_the_first(service):
    first = service()
    first.wait_healthy()
    with MongoClient(first.database_uri()) as client:
        client.ikepu.probe.insert_one({"_id": "kept", "n": 1})
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=15) == 0

    second = service(IKEPU_DATA_DIR=first.env["IKEPU_DATA_DIR"])
    second.wait_healthy()
    with MongoClient(second.database_uri()) as client:
        assert client.ikepu.probe.find_one({"_id": "kept"}) == {"_id": "kept", "n": 1}


def test_sigterm_lets_a_request_in_flight_finish(service):
    import threading

    svc = service()
    svc.wait_healthy()
    emulator = f"http://127.0.0.1:{svc.env['IKEPU_WECHAT_EMULATOR_PORT']}"
    code = httpx.post(f"{emulator}/__emulator__/jscode", json={"openid": "o_late"}).json()["code"]
    httpx.post(
        f"{emulator}/__emulator__/faults",
        json={"api": "jscode2session", "delay_ms": 1500, "count": 1},
    )
    answers = []
    login = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{svc.url}/mp/v1/auth/login", json={"code": code}, timeout=10)
        )
    )
    login.start()
    time.sleep(0.5)
    svc.proc.send_signal(signal.SIGTERM)
    login.join(timeout=10)
    assert svc.proc.wait(timeout=15) == 0
    assert answers and answers[0].status_code == 200
    assert answers[0].json()["token"]
