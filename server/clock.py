"""The one clock every part of the service reads.

Production reads the system time. The development clock (IKEPU_DEV_CLOCK=1, emulator only) adds
an offset that /__dev__/clock moves forward, so reminders and deadlines can be seen without waiting.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


class Clock:
    def __init__(self, *, adjustable: bool = False) -> None:
        self.adjustable = adjustable
        self._offset_s = 0.0

    def time(self) -> float:
        return time.time() + self._offset_s

    def now(self) -> datetime:
        # Milliseconds, as MongoDB stores them: what we answer equals what we read back later.
        now = datetime.now(UTC) + timedelta(seconds=self._offset_s)
        return now.replace(microsecond=now.microsecond // 1000 * 1000)

    def local_now(self) -> datetime:
        return self.now().astimezone(SHANGHAI)

    @property
    def offset_s(self) -> float:
        return self._offset_s

    def advance(self, seconds: float) -> None:
        if not self.adjustable:
            raise PermissionError("this clock follows real time and cannot be moved")
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset_s += seconds
