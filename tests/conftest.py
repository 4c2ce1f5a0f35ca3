"""Shared fixtures: one embedded database and one WeChat emulator for the whole run, a clean
database and a fresh context per test, and the application served on a loopback port."""

from __future__ import annotations

import base64
import os
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from config import load_settings
from server import processes
from server.app import make_app
from server.context import Context
from server.db import EmbeddedDatabase
from server.domain.wiring import wire
from server.seed import indexes_afterwards
from server.wechat.emulator import EmulatorState, start_emulator

TEST_SECRET = base64.urlsafe_b64encode(b"s" * 32).decode()
TEST_DATA_KEY = base64.urlsafe_b64encode(b"d" * 32).decode()
# One for every client: httpx builds a context per client otherwise (33 ms each, loading the CA
# bundle), though every server here speaks plain HTTP.
TLS = ssl.create_default_context()


@dataclass
class Emulator:
    url: str
    state: EmulatorState

    async def post(self, path: str, body: dict) -> dict:
        async with httpx.AsyncClient(base_url=self.url, verify=TLS) as client:
            response = await client.post(path, json=body)
            response.raise_for_status()
            return response.json()

    async def jscode(self, openid: str, unionid: str | None = None) -> str:
        body = {"openid": openid} | ({"unionid": unionid} if unionid else {})
        return (await self.post("/__emulator__/jscode", body))["code"]

    async def phonecode(self, openid: str, phone: str) -> str:
        return (await self.post("/__emulator__/phonecode", {"openid": openid, "phone": phone}))[
            "code"
        ]

    async def fault(self, api: str, count: int = 1, **kwargs) -> None:
        await self.post("/__emulator__/faults", {"api": api, "count": count, **kwargs})

    def messages(self, touser: str | None = None) -> list[dict]:
        return [m for m in self.state.messages if touser is None or m["touser"] == touser]


@pytest.fixture(scope="session")
async def mongo_uri():
    """Set IKEPU_TEST_MONGODB_URI to run the suite against another server."""
    if uri := os.environ.get("IKEPU_TEST_MONGODB_URI"):
        yield uri
        return
    database = EmbeddedDatabase(":memory:", test_commands=True)
    await database.start()
    yield database.uri
    await database.stop()


@pytest.fixture(scope="session")
async def emulator():
    server, state, port = start_emulator()
    yield Emulator(url=f"http://127.0.0.1:{port}/", state=state)
    server.stop()


def make_settings(mongo_uri: str, emulator: Emulator, tmp_path, **overrides):
    values = {
        "mongodb_uri": mongo_uri,
        "mongodb_db": f"t_{uuid.uuid4().hex[:12]}",
        "wechat_api_base": emulator.url,
        "data_dir": str(tmp_path),
        "secret_key": TEST_SECRET,
        "data_key": TEST_DATA_KEY,
        "dev_clock": True,
        "scheduler": False,
        "wechat_timeout_s": 2.0,
    }
    values.update(overrides)
    return load_settings({}, **values)


@pytest.fixture(scope="session")
def workers():
    """One solver pool and manager for the run, lent to every test's context: starting them
    took a second of every test that plans."""
    shared = processes.Workers()
    yield shared
    shared.close()


@pytest.fixture
def settings_overrides() -> dict:
    """Override in a test module to change the context's settings."""
    return {}


@pytest.fixture
async def ctx(mongo_uri, emulator, tmp_path, settings_overrides, workers):
    emulator.state.reset()
    context = await Context.start(
        make_settings(mongo_uri, emulator, tmp_path, **settings_overrides), workers=workers
    )
    await wire(context)
    yield context
    await context.client.drop_database(context.settings.mongodb_db)
    await context.close()


@pytest.fixture
async def base_url(ctx):
    sockets = bind_sockets(0, "127.0.0.1", backlog=2048)
    server = HTTPServer(make_app(ctx))
    server.add_sockets(sockets)
    yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    server.stop()
    await server.close_all_connections()


@pytest.fixture
async def http(base_url):
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=30, verify=TLS
    ) as client:
        yield client


@dataclass
class Session:
    user_id: str
    token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def login(http, emulator):
    """Sign a WeChat user in through the mini-program API, as the mini-program would."""

    async def sign_in(openid: str | None = None) -> Session:
        code = await emulator.jscode(openid or f"o_{uuid.uuid4().hex[:16]}")
        response = await http.post("/mp/v1/auth/login", json={"code": code})
        assert response.status_code == 200, response.text
        body = response.json()
        return Session(body["user"]["id"], body["token"], body["refresh_token"])

    return sign_in


_BUILT: dict[str, tuple[Any, dict[str, list[dict]]]] = {}


async def built_once(ctx, key: str, build: Callable[[Any], Awaitable[Any]]) -> Any:
    """What ``build(ctx)`` returns: built through the domain by the first test of this test
    process that asks for ``key``, and copied as stored (same ids) into every later test's fresh
    database. For large fixtures that tests read and add to but that would cost seconds each."""
    if key not in _BUILT:
        value = await build(ctx)
        stored = {
            name: await ctx.db[name].find().to_list(None)
            for name in await ctx.db.list_collection_names()
        }
        _BUILT[key] = (value, stored)
        return value
    value, stored = _BUILT[key]
    filled = [name for name, docs in stored.items() if docs]
    # Inserted under their indexes, a year's documents took five seconds; built after, three.
    async with indexes_afterwards(ctx, filled):
        for name in filled:
            await ctx.db[name].insert_many(stored[name], ordered=False)
    return value
