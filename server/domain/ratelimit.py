"""Fixed-window rate limits shared by every process through MongoDB. Owns `rate_limits`."""

from __future__ import annotations

from datetime import timedelta

from pymongo import ReturnDocument

from server.domain.errors import RateLimited


async def hit(ctx, bucket: str, limit: int, window_s: int = 60) -> None:
    """Count one attempt in `bucket`; refuse once the window holds more than `limit`."""
    now = ctx.clock.now()
    window = int(now.timestamp()) // window_s
    doc = await ctx.db["rate_limits"].find_one_and_update(
        {"_id": f"{bucket}:{window}"},
        {
            "$inc": {"count": 1},
            "$setOnInsert": {"expires_at": now + timedelta(seconds=2 * window_s)},
        },
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    if doc["count"] > limit:
        raise RateLimited("操作过于频繁，请稍后再试")
