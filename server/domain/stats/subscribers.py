"""Keeping the roll-ups current: one subscriber per domain event, each counting its one fact
through the same `Tally` rules as the recount and adding it to the stored year."""

from __future__ import annotations

from collections import defaultdict

import msgspec
from bson import ObjectId

from server.clock import SHANGHAI
from server.domain import activities, events, hours
from server.domain.stats.rollups import Tally, apply, nodes_for


async def _apply_one(ctx, org_ids, year: int, count) -> None:
    tally = Tally(await nodes_for(ctx, org_ids))
    count(tally)
    await apply(ctx, tally, year)


async def on_activity_published(ctx, kind: str, *, activity_id: ObjectId, **_) -> None:
    held = await activities.held_activity(ctx, activity_id)
    if held is not None and not held.caravan_visit:
        year = held.starts_at.astimezone(SHANGHAI).year
        await _apply_one(ctx, [held.org_id], year, lambda t: t.count_activity(held))


async def on_activity_cancelled(ctx, kind: str, *, activity_id: ObjectId, **_) -> None:
    held = await activities.held_activity(ctx, activity_id)
    if held is not None and not held.caravan_visit:
        year = held.starts_at.astimezone(SHANGHAI).year
        await _apply_one(ctx, [held.org_id], year, lambda t: t.count_activity(held, sign=-1))


async def on_activity_reached(ctx, kind: str, *, activity_id: ObjectId, delta: int, **_) -> None:
    held = await activities.held_activity(ctx, activity_id)
    if held is not None and not held.caravan_visit:
        year = held.starts_at.astimezone(SHANGHAI).year
        await _apply_one(ctx, [held.org_id], year, lambda t: t.reach(held, delta))


async def _count_values(ctx, values: list[hours.CreditValue]) -> None:
    by_year: dict[int, list] = defaultdict(list)
    for value in values:
        by_year[value.served_at.astimezone(SHANGHAI).year].append(value)
    for year, group in by_year.items():
        tally = Tally(await nodes_for(ctx, [v.org_id for v in group]))
        for value in group:
            tally.count_hours(value)
        await apply(ctx, tally, year)


async def on_hours_confirmed(ctx, kind: str, *, record_ids: list[ObjectId], **_) -> None:
    await _count_values(ctx, await hours.credit_values(ctx, record_ids))


async def on_hours_adjusted(ctx, kind: str, *, record_id: ObjectId, delta: float, **_) -> None:
    values = await hours.credit_values(ctx, [record_id])
    await _count_values(ctx, [msgspec.structs.replace(v, hours=delta) for v in values])


async def on_trip_logged(
    ctx, kind: str, *, org_id: ObjectId, caravan_id: ObjectId, date: str, km: float, **_
) -> None:
    await _apply_one(
        ctx, [org_id], int(date[:4]), lambda t: t.count_km(org_id, caravan_id, date, km)
    )


async def on_visit_confirmed(
    ctx,
    kind: str,
    *,
    org_id: ObjectId,
    caravan_id: ObjectId,
    site_id: ObjectId,
    date: str,
    beneficiaries: int,
    **_,
) -> None:
    await _apply_one(
        ctx,
        [org_id],
        int(date[:4]),
        lambda t: t.count_visit(org_id, caravan_id, site_id, date, beneficiaries),
    )


def register(bus: events.EventBus) -> None:
    """Hook the roll-ups to the domain events (called once at start)."""
    bus.subscribe(events.ACTIVITY_PUBLISHED, on_activity_published)
    bus.subscribe(events.ACTIVITY_CANCELLED, on_activity_cancelled)
    bus.subscribe(events.ACTIVITY_REACHED, on_activity_reached)
    bus.subscribe(events.HOURS_CONFIRMED, on_hours_confirmed)
    bus.subscribe(events.HOURS_ADJUSTED, on_hours_adjusted)
    bus.subscribe(events.TRIP_LOGGED, on_trip_logged)
    bus.subscribe(events.VISIT_CONFIRMED, on_visit_confirmed)
