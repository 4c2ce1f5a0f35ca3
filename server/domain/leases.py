"""Leases in MongoDB: one holder at a time across processes, lost if not renewed in time.

Owns the `leases` collection. The scheduler holds one so that only one process dispatches.
"""

from __future__ import annotations

from datetime import timedelta

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError


async def acquire(ctx, name: str, holder: str, seconds: float) -> bool:
    """Take or renew the lease; False while someone else holds it."""
    now = ctx.clock.now()
    try:
        doc = await ctx.db["leases"].find_one_and_update(
            {"_id": name, "$or": [{"holder": holder}, {"until": {"$lt": now}}]},
            {"$set": {"holder": holder, "until": now + timedelta(seconds=seconds)}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:
        return False  # it exists and another holder's lease is still running
    return doc["holder"] == holder


async def release(ctx, name: str, holder: str) -> None:
    await ctx.db["leases"].delete_one({"_id": name, "holder": holder})
