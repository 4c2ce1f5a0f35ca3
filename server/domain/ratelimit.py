"""Sliding-window rate limits shared by every process through MongoDB. Owns `rate_limits`.

A bucket keeps the times of its last `limit` attempts, oldest first; an attempt passes when
the oldest of them is a whole window old. A fixed window (a count per clock minute) let
twice the limit through across a minute's turn, and a test met exactly that."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pymongo.errors import DuplicateKeyError

from server.domain.errors import RateLimited

_LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)


async def hit(ctx, bucket: str, limit: int, window_s: int = 60) -> None:
    """Count one attempt in `bucket`; refuse it while `limit` attempts fall within the window.

    One conditional update by `_id` (the embedded server scans the collection for a
    findAndModify, and for an `$or`): a new bucket is padded with `limit` attempts long ago,
    so "the oldest kept attempt is a window old" is the whole condition. The check and the
    count are one atomic step, so the limit is exact under concurrent attempts. A refused
    attempt is not counted: it would push out a passed one and shorten the wait. The limit is
    part of the key, so changing it starts the bucket afresh rather than misreading its length."""
    now = ctx.clock.now()
    attempts = ctx.db["rate_limits"]
    key = f"{bucket}:{limit}"
    window_old = {"_id": key, "hits.0": {"$lte": now - timedelta(seconds=window_s)}}
    count_one = {
        "$push": {"hits": {"$each": [now], "$slice": -limit}},
        "$set": {"expires_at": now + timedelta(seconds=window_s)},
    }
    if (await attempts.update_one(window_old, count_one)).matched_count:
        return
    try:
        await attempts.insert_one(
            {
                "_id": key,
                "hits": [_LONG_AGO] * (limit - 1) + [now],
                "expires_at": now + timedelta(seconds=window_s),
            }
        )
    except DuplicateKeyError:
        # The bucket exists: it is full, or a concurrent first attempt created it between our
        # update and our insert. Trying the update again tells which.
        if not (await attempts.update_one(window_old, count_one)).matched_count:
            raise RateLimited("操作过于频繁，请稍后再试") from None
