"""Domain events: every kind of event the domain announces is declared here. Modules that react
(reminders, statistics) subscribe to the context's bus (`ctx.events`, wired at start by
`server.domain.wiring`); emitters don't know them.

Subscribers run in the emitter's task, after its writes, so a reaction sees the state that caused
it; a failing subscriber is logged and does not undo the emitter's work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

Subscriber = Callable[..., Awaitable[None]]

SIGNUP_CONFIRMED = "signup_confirmed"
SIGNUP_WAITLISTED = "signup_waitlisted"
SIGNUP_PENDING = "signup_pending"
SIGNUP_CANCELLED = "signup_cancelled"
SIGNUP_REJECTED = "signup_rejected"
SIGNUP_WRITE_FAILED = "signup_write_failed"
"""A sign-up took its seat (or waitlist place) and the write of its record failed: activity_id.
The activity's counters may be a sign-up ahead of its records until they are repaired."""
WAITLIST_PROMOTED = "waitlist_promoted"
MOVED_TO_WAITLIST = "moved_to_waitlist"
ACTIVITY_PUBLISHED = "activity_published"
ACTIVITY_CHANGED = "activity_changed"
"""A published activity's time, place or capacity changed: activity_id, changed (the new
values), user_ids (those signed up who are not told otherwise)."""
ACTIVITY_CANCELLED = "activity_cancelled"
VISIT_SCHEDULED = "visit_scheduled"
"""A caravan visit was published as an activity: request_id, site_id, activity_id, caravan_id,
plan_id. The site's admins are to be told (reminders hook in here)."""
VISIT_REQUEST_DECLINED = "visit_request_declined"
"""A dispatcher declined a site's visit request: request_id, site_id, reason. The site's admins
are told."""

ACTIVITY_REACHED = "activity_reached"
"""The organiser reported how many people an activity reached: activity_id, delta."""
TRIP_LOGGED = "trip_logged"
"""A caravan's day on the road was logged: org_id, date (Shanghai), km."""
VISIT_CONFIRMED = "visit_confirmed"
"""A site confirmed a caravan visit and the people it reached: org_id, site_id, date,
beneficiaries. Emitted once per visit."""

HOURS_CONFIRMED = "hours_confirmed"
"""Pending hours were confirmed: user_ids, record_ids (each record announced once)."""
HOURS_ADJUSTED = "hours_adjusted"
"""A confirmed credit's value changed: record_id, delta (the statistics follow it)."""
HOURS_DISPUTED = "hours_disputed"
"""A volunteer disputed a record: record_id, org_id."""
HOURS_DISPUTE_RESOLVED = "hours_dispute_resolved"
"""Staff decided a dispute: dispute_id, record_id, user_id (the volunteer), activity_id,
outcome (upheld, rejected), reason."""
HOURS_DISPUTE_OVERDUE = "hours_dispute_overdue"
"""A dispute has waited too long for an answer: dispute_id, org_id, activity_id, raised_at.
Emitted once per dispute."""


class EventBus:
    """Who hears each kind of event, in one process."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Subscriber]] = {}

    def subscribe(self, kind: str, subscriber: Subscriber) -> None:
        listeners = self._subscribers.setdefault(kind, [])
        if subscriber not in listeners:
            listeners.append(subscriber)

    async def emit(self, ctx, kind: str, **payload: Any) -> None:
        log.info("domain_event", kind=kind, **{k: str(v) for k, v in payload.items()})
        for subscriber in self._subscribers.get(kind, ()):
            try:
                await subscriber(ctx, kind, **payload)
            except Exception:
                log.exception(
                    "event_subscriber_failed", kind=kind, subscriber=subscriber.__qualname__
                )


async def emit(ctx, kind: str, **payload: Any) -> None:
    await ctx.events.emit(ctx, kind, **payload)
