"""Leases: one holder at a time for a document, across processes, lost when not renewed in time.

One implementation for every lease the service keeps: the scheduler's (a named document in
`leases`), a plan being solved, the WeChat access-token refresh, and reminders claimed for
delivery. A lease is two fields on the leased document, a holder and the time it runs until.

Every operation here is an `update_one`/`update_many` whose filter starts with the caller's
query (by `_id` where there is one) plus plain field conditions: shapes the embedded server
answers from an index, where `find_one_and_update` would scan the collection.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo.errors import DuplicateKeyError


@dataclass(frozen=True)
class Lease:
    """Where a lease lives on its documents, and how long a take or renewal holds."""

    seconds: float
    holder_field: str = "lease_holder"
    until_field: str = "lease_until"

    def free(self, now: datetime) -> dict:
        """Matches documents nobody holds (no holder, or a lease run out)."""
        return {"$or": [{self.holder_field: None}, {self.until_field: {"$lt": now}}]}

    def held_by(self, holder: str) -> dict:
        return {self.holder_field: holder}

    def taken(self, holder: str, now: datetime) -> dict:
        """The fields a take or renewal sets."""
        return {self.holder_field: holder, self.until_field: now + timedelta(seconds=self.seconds)}

    def given_up(self, now: datetime) -> dict:
        return {self.holder_field: None, self.until_field: now}

    async def acquire(
        self,
        collection,
        query: dict,
        holder: str,
        now: datetime,
        *,
        upsert: bool = False,
        set_fields: dict | None = None,
        inc: dict | None = None,
    ) -> bool:
        """Take the lease on the document matching `query`, or renew it when `holder` has it
        already; False while someone else holds it (or nothing matches). With `upsert`, a
        missing document is created held."""
        ours_or_free = {"$or": [*self.free(now)["$or"], self.held_by(holder)]}
        selector = {"$and": [query, ours_or_free]}
        update: dict = {"$set": {**(set_fields or {}), **self.taken(holder, now)}}
        if inc:
            update["$inc"] = inc
        try:
            result = await collection.update_one(selector, update, upsert=upsert)
        except DuplicateKeyError:
            return False  # the document exists and another holder's lease is still running
        return result.matched_count == 1 or result.upserted_id is not None

    async def renew(
        self, collection, query: dict, holder: str, now: datetime, set_fields: dict | None = None
    ) -> bool:
        """Extend a lease this holder has; False when it is no longer theirs."""
        result = await collection.update_one(
            {**query, **self.held_by(holder)},
            {"$set": {**(set_fields or {}), **self.taken(holder, now)}},
        )
        return result.matched_count == 1

    async def release(
        self,
        collection,
        query: dict,
        holder: str,
        now: datetime,
        set_fields: dict | None = None,
        *,
        inc: dict | None = None,
    ) -> bool:
        """Give the lease up (only if this holder has it), so another may take it at once."""
        update: dict = {"$set": {**(set_fields or {}), **self.given_up(now)}}
        if inc:
            update["$inc"] = inc
        result = await collection.update_one({**query, **self.held_by(holder)}, update)
        return result.matched_count == 1
