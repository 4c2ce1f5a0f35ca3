"""What the benchmarks share: settings for a throwaway service, and a fresh embedded database
beside the WeChat emulator. Not a benchmark itself: `make bench` runs the files of bench/ whose
names do not start with an underscore."""

from __future__ import annotations

import base64
import contextlib
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import Settings, load_settings
from server.context import Context
from server.db import EmbeddedDatabase
from server.domain.wiring import wire
from server.wechat.emulator import EmulatorState, start_emulator

KEY = base64.urlsafe_b64encode(b"b" * 32).decode()  # fixed keys: benchmark data is thrown away


def bench_settings(uri: str, emulator_port: int, data_dir, **overrides) -> Settings:
    """Settings of a context (or a service) on `uri`, its own database, WeChat the emulator."""
    fields = {
        "mongodb_uri": uri,
        "mongodb_db": f"bench_{uuid.uuid4().hex[:8]}",
        "wechat_api_base": f"http://127.0.0.1:{emulator_port}/",
        "data_dir": str(data_dir),
        "secret_key": KEY,
        "data_key": KEY,
        "scheduler": False,
    }
    return load_settings({}, **{**fields, **overrides})


async def start_context(settings: Settings) -> Context:
    """A context wired as the service wires its own."""
    ctx = await Context.start(settings)
    await wire(ctx)
    return ctx


@contextlib.asynccontextmanager
async def fresh_parts(latency_ms: float = 0.0) -> AsyncIterator[tuple[EmulatorState, Settings]]:
    """A fresh in-memory database process and the emulator (answering after `latency_ms`),
    with the settings of a context on them; all stopped on the way out."""
    database = EmbeddedDatabase(":memory:")
    await database.start()
    emulator, state, port = start_emulator()
    state.latency_ms = latency_ms
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            yield state, bench_settings(database.uri, port, data_dir)
    finally:
        emulator.stop()
        await database.stop()
