"""Periods: a calendar year (served from the roll-ups) or any span of Asia/Shanghai days."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from server.clock import SHANGHAI
from server.domain.errors import InvalidRequest


@dataclass(frozen=True)
class Period:
    first: date
    last: date  # inclusive
    year: int | None  # a calendar year, served from the roll-ups

    @classmethod
    def calendar_year(cls, year: int) -> Period:
        if not 2000 <= year <= 2100:
            raise InvalidRequest("年份超出范围", field="year")
        return cls(date(year, 1, 1), date(year, 12, 31), year)

    @classmethod
    def between(cls, first: date, last: date) -> Period:
        if last < first:
            raise InvalidRequest("结束日期不能早于开始日期", field="to")
        if (last - first).days > 366 * 5:
            raise InvalidRequest("统计区间不能超过五年", field="to")
        whole_year = first == date(first.year, 1, 1) and last == date(first.year, 12, 31)
        return cls(first, last, first.year if whole_year else None)

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, datetime.min.time(), SHANGHAI)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), datetime.min.time(), SHANGHAI)

    def months(self) -> list[str]:
        keys, year, month = [], self.first.year, self.first.month
        while (year, month) <= (self.last.year, self.last.month):
            keys.append(f"{year:04d}-{month:02d}")
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return keys


def month_of(moment: datetime) -> str:
    local = moment.astimezone(SHANGHAI)
    return f"{local.year:04d}-{local.month:02d}"


def parse_period(year: int | None, first: str | None, last: str | None, today: date) -> Period:
    if first or last:
        try:
            start = date.fromisoformat(first) if first else date(today.year, 1, 1)
            end = date.fromisoformat(last) if last else today
        except ValueError:
            raise InvalidRequest("日期格式应为 YYYY-MM-DD", field="from") from None
        return Period.between(start, end)
    return Period.calendar_year(year or today.year)
