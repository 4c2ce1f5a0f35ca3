"""Leases: one holder at a time for a document, across processes, lost when not renewed in time.

One implementation for every lease the service keeps: the scheduler's (a named document in
`leases`), a plan being solved, the WeChat access-token refresh, and reminders claimed for
delivery. A lease is two fields on the leased document, a holder and the time it runs until.

Every operation here is an `update_one` whose filter is the caller's query (by `_id` where there
is one) plus plain field conditions: shapes the embedded server answers from an index, where
`find_one_and_update` or an `$or` would scan the collection. "Free" (no holder, or a lease run
out) is therefore two updates, each of which only one of several racing holders can win.
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
        update: dict = {"$set": {**(set_fields or {}), **self.taken(holder, now)}}
        if inc:
            update["$inc"] = inc
        try:
            result = await collection.update_one(
                {**query, self.holder_field: {"$in": [None, holder]}}, update, upsert=upsert
            )
            if result.matched_count == 1 or result.upserted_id is not None:
                return True
        except DuplicateKeyError:
            pass  # it exists and another holds it: ours only once their lease has run out
        return await self._take_over(collection, query, update, now)

    async def update_free(self, collection, query: dict, update: dict, now: datetime) -> bool:
        """Apply `update` to the document matching `query` if nobody holds its lease. Of several
        racing, one wins when `update` takes the document out of `query` (or takes the lease)."""
        result = await collection.update_one({**query, self.holder_field: None}, update)
        return result.matched_count == 1 or await self._take_over(collection, query, update, now)

    async def _take_over(self, collection, query: dict, update: dict, now: datetime) -> bool:
        # A take moves the lease's end past `now`: of several racing here, one matches.
        result = await collection.update_one({**query, self.until_field: {"$lt": now}}, update)
        return result.matched_count == 1

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
