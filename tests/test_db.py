"""The storage layer under both drivers, and the idempotency store built on it."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pymongo.errors import DuplicateKeyError

from server.db import aggregate, close_client, database, ensure_indexes, make_client, transaction
from server.domain import idempotency
from server.domain.errors import Conflict


@pytest.fixture(params=["pymongo", "motor"])
async def store(request, mongo_uri):
    client = make_client(mongo_uri, request.param)
    name = f"t_{uuid.uuid4().hex[:12]}"
    db = database(client, name)
    await ensure_indexes(db)
    yield client, db
    await client.drop_database(name)
    await close_client(client)


async def test_crud_aggregate_and_transactions_under_both_drivers(store):
    client, db = store
    await db.things.insert_many([{"kind": k, "n": n} for k, n in [("a", 1), ("a", 2), ("b", 5)]])
    totals = await aggregate(db.things, [{"$group": {"_id": "$kind", "n": {"$sum": "$n"}}}])
    assert {t["_id"]: t["n"] for t in totals} == {"a": 3, "b": 5}

    async with transaction(client) as session:
        await db.things.insert_one({"kind": "c", "n": 7}, session=session)
        await db.ledger.insert_one({"kind": "c"}, session=session)
    assert await db.things.count_documents({"kind": "c"}) == 1

    with pytest.raises(RuntimeError):
        async with transaction(client) as session:
            await db.things.insert_one({"kind": "d", "n": 9}, session=session)
            raise RuntimeError("abort")
    assert await db.things.count_documents({"kind": "d"}) == 0


async def test_datetimes_come_back_timezone_aware(store):
    from datetime import UTC, datetime

    _, db = store
    when = datetime(2026, 9, 20, 1, 30, tzinfo=UTC)
    await db.things.insert_one({"_id": 1, "at": when})
    assert (await db.things.find_one({"_id": 1}))["at"] == when


async def test_unique_indexes_are_in_place(store):
    _, db = store
    doc = {"scope": "s", "key": "k", "fingerprint": "f", "state": "running"}
    await db.idempotency.insert_one(dict(doc))
    with pytest.raises(DuplicateKeyError):
        await db.idempotency.insert_one(dict(doc))


async def test_idempotency_runs_once_and_replays(ctx):
    stored, claim = await idempotency.begin(ctx, "u1 POST /x", "key-1", b'{"a":1}')
    assert stored is None and claim is not None
    await idempotency.complete(ctx, claim, 201, "application/json", b'{"id":"1"}')
    replay, again = await idempotency.begin(ctx, "u1 POST /x", "key-1", b'{"a":1}')
    assert again is None
    assert (replay.status, replay.body) == (201, b'{"id":"1"}')
    with pytest.raises(Conflict) as caught:
        await idempotency.begin(ctx, "u1 POST /x", "key-1", b'{"a":2}')
    assert caught.value.code == "idempotency_key_reused"


async def test_concurrent_retries_with_one_key_run_once(ctx):
    runs = 0

    async def attempt():
        nonlocal runs
        stored, claim = await idempotency.begin(ctx, "u2 POST /y", "key-2", b"{}")
        if claim is None:
            return stored.body
        runs += 1
        await asyncio.sleep(0.2)  # the first one is still working while the others arrive
        await idempotency.complete(ctx, claim, 200, "application/json", b"first")
        return b"first"

    results = await asyncio.gather(*[attempt() for _ in range(10)])
    assert runs == 1
    assert results == [b"first"] * 10


async def test_a_released_claim_lets_the_retry_run(ctx):
    _, claim = await idempotency.begin(ctx, "u3 POST /z", "key-3", b"{}")
    await idempotency.release(ctx, claim)
    stored, again = await idempotency.begin(ctx, "u3 POST /z", "key-3", b"{}")
    assert stored is None and again is not None
