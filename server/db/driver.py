"""The MongoDB driver: pymongo's AsyncMongoClient by default, motor 3.7 where deployments chose it.

The two differ in a few calls (aggregate is a coroutine in pymongo, a cursor in motor; sessions
start differently). Domain code uses the helpers here for those, and the collection API for the
rest, so it runs unchanged under both.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from typing import Any, TypeVar

from bson.codec_options import CodecOptions
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

DRIVERS = ("pymongo", "motor")
T = TypeVar("T")
RETRY_PAUSE_S = 0.02
RETRY_PAUSE_MAX_S = 0.5


def make_client(uri: str, driver: str = "pymongo", **kwargs: Any):
    kwargs.setdefault("tz_aware", True)
    kwargs.setdefault("serverSelectionTimeoutMS", 5000)
    if driver == "pymongo":
        return AsyncMongoClient(uri, **kwargs)
    if driver == "motor":
        from motor.motor_asyncio import AsyncIOMotorClient

        return AsyncIOMotorClient(uri, **kwargs)
    raise ValueError(f"unknown driver {driver!r}; expected one of {DRIVERS}")


def database(client, name: str):
    return client.get_database(name, codec_options=CodecOptions(tz_aware=True, tzinfo=UTC))


async def close_client(client) -> None:
    result = client.close()
    if hasattr(result, "__await__"):
        await result


async def aggregate(collection, pipeline: list[dict], **kwargs: Any) -> list[dict]:
    cursor = collection.aggregate(pipeline, **kwargs)
    if hasattr(cursor, "__await__"):
        cursor = await cursor
    return await cursor.to_list(None)


@contextlib.asynccontextmanager
async def transaction(client) -> AsyncIterator[Any]:
    """A session with a transaction open; commits on success, aborts on error."""
    session = client.start_session()
    if hasattr(session, "__await__"):
        session = await session
    async with session:
        started = session.start_transaction()
        if hasattr(started, "__await__"):
            started = await started
        async with started:
            yield session


async def in_transaction(client, work: Callable[[Any], Awaitable[T]], *, attempts: int = 5) -> T:
    """``work(session)`` in a transaction, run again from the start when the error is transient
    (a write conflict with another transaction, a dropped connection), at most ``attempts``
    times: after that the database is failing, and the error is raised.

    A write conflict means another transaction holds the same documents and has not committed
    yet; tried again at once, the body meets it still open. So each retry first waits a jittered,
    doubling pause (``RETRY_PAUSE_S``), long enough for a short transaction to finish."""
    for attempt in range(1, attempts + 1):
        try:
            async with transaction(client) as session:
                return await work(session)
        except PyMongoError as exc:
            if attempt == attempts or not exc.has_error_label("TransientTransactionError"):
                raise
        pause = min(RETRY_PAUSE_S * 2 ** (attempt - 1), RETRY_PAUSE_MAX_S)
        await asyncio.sleep(pause / 2 + random.uniform(0, pause / 2))
    raise ValueError("attempts must be at least 1")
