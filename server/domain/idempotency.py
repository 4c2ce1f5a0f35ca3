"""Idempotent retries: the first request with an Idempotency-Key runs; a retry with the same key
gets the stored answer instead of running again. Owns the `idempotency` collection."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import msgspec
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from server.domain.errors import Conflict, InvalidRequest

KEEP_FOR = timedelta(hours=24)
WAIT_FOR_FIRST_S = 5.0


class Stored(msgspec.Struct):
    status: int
    content_type: str
    body: bytes


class Claim(msgspec.Struct):
    id: ObjectId


async def begin(
    ctx, scope: str, key: str, request_body: bytes
) -> tuple[Stored | None, Claim | None]:
    """Either the stored answer of an earlier request with this key, or a claim to run it now."""
    if not 1 <= len(key) <= 200:
        raise InvalidRequest("Idempotency-Key 长度应为 1–200 个字符", field="Idempotency-Key")
    coll = ctx.db["idempotency"]
    fingerprint = hashlib.sha256(request_body).hexdigest()
    now = ctx.clock.now()
    doc = {
        "_id": ObjectId(),
        "scope": scope,
        "key": key,
        "fingerprint": fingerprint,
        "state": "running",
        "created_at": now,
        "expires_at": now + KEEP_FOR,
    }
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_FOR_FIRST_S
    while True:
        try:
            await coll.insert_one(doc)
            return None, Claim(id=doc["_id"])
        except DuplicateKeyError:
            existing = await coll.find_one({"scope": scope, "key": key})
        if existing is None:
            continue  # released between our insert and read: try to claim again
        if existing["fingerprint"] != fingerprint:
            raise Conflict("该 Idempotency-Key 已用于另一个请求", code="idempotency_key_reused")
        if existing["state"] == "done":
            return Stored(existing["status"], existing["content_type"], existing["body"]), None
        if loop.time() > deadline:
            raise Conflict("相同的请求正在处理中，请稍后重试", code="request_in_progress")
        await asyncio.sleep(0.05)


async def complete(ctx, claim: Claim, status: int, content_type: str, body: bytes) -> None:
    await ctx.db["idempotency"].update_one(
        {"_id": claim.id},
        {"$set": {"state": "done", "status": status, "content_type": content_type, "body": body}},
    )


async def release(ctx, claim: Claim) -> None:
    await ctx.db["idempotency"].delete_one({"_id": claim.id})
