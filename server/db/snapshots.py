"""A small collection held whole in each process, reloaded when its version document moves.

The owner of the collection keeps one :class:`Snapshot` on the context, names the version
document (`{_id: key, v}` in a collection of its own) and bumps it after each change with
:meth:`Snapshot.changed`. Staleness: none in the process that made the change (it hands the new
value over at once); at most `check_s`, plus a reload, in the others.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from pymongo.errors import DuplicateKeyError

T = TypeVar("T")


class Snapshot(Generic[T]):
    def __init__(
        self,
        versions: str,
        key: str,
        load: Callable[[Any], Awaitable[T]],
        check_s: float = 1.0,
    ) -> None:
        self.versions, self.key, self._load, self.check_s = versions, key, load, check_s
        self._value: T | None = None
        self._version: int | None = None  # None: not loaded
        self._checked_at = -math.inf
        self._lock = asyncio.Lock()

    async def value(self, ctx) -> T:
        """The held value, at most `check_s` behind other processes' changes. It is replaced,
        never changed in place: read it, don't modify it."""
        tick = asyncio.get_running_loop().time()
        if self._version is None or (
            tick - self._checked_at >= self.check_s and not self._lock.locked()
        ):
            async with self._lock:
                if self._version is None or tick - self._checked_at >= self.check_s:
                    self._checked_at = tick
                    version = await ctx.db[self.versions].find_one({"_id": self.key})
                    v = version["v"] if version else 0
                    if v != self._version:
                        # The version first: a change bumped after it reloads again.
                        self._value = await self._load(ctx)
                        self._version = v
        return self._value

    @property
    def held(self) -> T | None:
        """The value if loaded (None before the first use)."""
        return self._value if self._version is not None else None

    async def changed(self, ctx, value: T | None = None) -> None:
        """This process changed the collection: hold `value` (the new whole, when the caller
        built it) at once, and announce the change to the other processes."""
        if value is not None and self._version is not None:
            self._value = value
        else:
            self._checked_at = -math.inf  # read the version (and reload) on the next use
        for _ in range(2):  # two first bumps may race to create the document
            try:
                await ctx.db[self.versions].update_one(
                    {"_id": self.key}, {"$inc": {"v": 1}}, upsert=True
                )
                return
            except DuplicateKeyError:
                continue
