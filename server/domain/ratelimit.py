"""Fixed-window rate limits shared by every process through MongoDB. Owns `rate_limits`."""

from __future__ import annotations

from datetime import timedelta

from pymongo.errors import DuplicateKeyError

from server.domain.errors import RateLimited


async def hit(ctx, bucket: str, limit: int, window_s: int = 60) -> None:
    """Count one attempt in `bucket`; refuse once the window has counted `limit` of them.

    One conditional update by `_id` (the embedded server scans the collection for a
    findAndModify): it counts the attempt only while the window is below the limit, so the
    check and the count are one atomic step and the limit is exact under concurrent attempts.
    A refused attempt is not counted: counting it would change nothing, as the window ends
    when it ends."""
    now = ctx.clock.now()
    window = int(now.timestamp()) // window_s
    windows = ctx.db["rate_limits"]
    key = f"{bucket}:{window}"
    below_limit = {"_id": key, "count": {"$lt": limit}}
    count_one = {"$inc": {"count": 1}}
    try:
        await windows.update_one(
            below_limit,
            {**count_one, "$setOnInsert": {"expires_at": now + timedelta(seconds=2 * window_s)}},
            upsert=True,
        )
    except DuplicateKeyError:
        # The window exists and did not match: it is full, or a concurrent first attempt
        # created it between our filter and our insert. Counting again without the upsert
        # tells which.
        if not (await windows.update_one(below_limit, count_one)).matched_count:
            raise RateLimited("操作过于频繁，请稍后再试") from None
