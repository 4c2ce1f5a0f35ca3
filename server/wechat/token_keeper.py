"""The central access-token keeper: one token shared by every process through MongoDB.

WeChat allows a limited number of token fetches a day and a fresh fetch can invalidate the one
other processes hold, so exactly one process refreshes at a time, under a lease, and everyone else
reads the stored token. Owns the `wechat_tokens` collection.
"""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import timedelta

import structlog

from server.db import Lease

log = structlog.get_logger(__name__)

REFRESH_MARGIN = timedelta(minutes=5)
LEASE = Lease(30, holder_field="lease_owner")
POLL_S = 0.05


class TokenKeeper:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._token: str | None = None
        self._expires_at = None
        self._local = asyncio.Lock()

    @property
    def appid(self) -> str:
        return self.ctx.wechat.appid

    @property
    def _coll(self):
        return self.ctx.db["wechat_tokens"]

    def _fresh(self, expires_at) -> bool:
        return expires_at is not None and expires_at - REFRESH_MARGIN > self.ctx.clock.now()

    async def get(self) -> str:
        if self._token and self._fresh(self._expires_at):
            return self._token
        async with self._local:
            if self._token and self._fresh(self._expires_at):
                return self._token
            doc = await self._shared_token()
            self._token, self._expires_at = doc["token"], doc["expires_at"]
            return self._token

    async def invalidate(self, bad_token: str) -> None:
        """WeChat refused this token (40001/42001): the next get() fetches a new one."""
        if self._token == bad_token:
            self._token = None
        await self._coll.update_one(
            {"_id": self.appid, "token": bad_token}, {"$set": {"invalid": True}}
        )

    async def _shared_token(self) -> dict:
        timeout = self.ctx.settings.wechat_timeout_s * 3
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            doc = await self._coll.find_one({"_id": self.appid})
            if (
                doc
                and doc.get("token")
                and not doc.get("invalid")
                and self._fresh(doc["expires_at"])
            ):
                return doc
            if await self._take_lease():
                try:
                    return await self._refresh(force=bool(doc and doc.get("invalid")))
                finally:
                    await LEASE.release(
                        self._coll, {"_id": self.appid}, self.owner, self.ctx.clock.now()
                    )
            if loop.time() > deadline:
                raise TimeoutError("timed out waiting for another process to refresh the token")
            await asyncio.sleep(POLL_S)

    async def _take_lease(self) -> bool:
        return await LEASE.acquire(
            self._coll, {"_id": self.appid}, self.owner, self.ctx.clock.now(), upsert=True
        )

    async def _refresh(self, *, force: bool) -> dict:
        # Another process may have refreshed between our read and taking the lease.
        doc = await self._coll.find_one({"_id": self.appid})
        if doc and doc.get("token") and not doc.get("invalid") and self._fresh(doc["expires_at"]):
            return doc
        token, expires_in = await self.ctx.wechat.fetch_stable_token(force_refresh=force)
        expires_at = self.ctx.clock.now() + timedelta(seconds=expires_in)
        await self._coll.update_one(
            {"_id": self.appid},
            {"$set": {"token": token, "expires_at": expires_at, "invalid": False}},
        )
        log.info("wechat_token_refreshed", appid=self.appid, forced=force)
        return {"token": token, "expires_at": expires_at}
