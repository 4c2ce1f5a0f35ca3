"""A caravan's target for a year (field days, km), set by the association, and its progress
toward it from the year's trips. The target is kept on the caravan (`fleet`), the trips are
`trips`'."""

from __future__ import annotations

from datetime import datetime

import msgspec
from bson import ObjectId

from server.domain.caravans.fleet import YearTarget, get_caravan_doc, store_target, target_of
from server.domain.caravans.trip_figures import year_of_trips


class TargetProgress(msgspec.Struct):
    """A caravan's target for a year and its trips' progress toward it. A field day is a logged
    day with a visit its site confirmed (`field_days_waiting`: days with visits logged and none
    confirmed yet); km are every logged trip's, as 行驶里程 counts them. A percentage is of its
    target (it may pass 100), None when there is no such target."""

    caravan_id: str
    year: int
    field_days_target: int | None
    km_target: float | None
    field_days: int
    field_days_waiting: int
    km: float
    field_days_pct: float | None
    km_pct: float | None
    set_at: datetime | None


def _pct(done: float, target: float | None) -> float | None:
    return round(100 * done / target, 1) if target else None


async def target_progress(ctx, caravan: dict, year: int) -> TargetProgress:
    trips = await year_of_trips(ctx, caravan["_id"], year)
    done, waiting, km = trips.field_days, trips.waiting_days, trips.km
    target = target_of(caravan, year) or {}
    return TargetProgress(
        caravan_id=str(caravan["_id"]),
        year=year,
        field_days_target=target.get("field_days"),
        km_target=target.get("km"),
        field_days=done,
        field_days_waiting=waiting,
        km=km,
        field_days_pct=_pct(done, target.get("field_days")),
        km_pct=_pct(km, target.get("km")),
        set_at=target.get("set_at"),
    )


async def get_target(ctx, caravan_id, year: int) -> TargetProgress:
    return await target_progress(ctx, await get_caravan_doc(ctx, caravan_id), year)


async def set_target(ctx, caravan_id, target: YearTarget, *, by: ObjectId | None) -> TargetProgress:
    """The association sets a caravan's target for a year (both figures left out remove it)."""
    return await target_progress(
        ctx, await store_target(ctx, caravan_id, target, by=by), target.year
    )
