"""The request and response types of plans (msgspec Structs, validated and described in the
OpenAPI document from the same definitions)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import msgspec

from server.domain.text import HHMM

Weekday = Annotated[int, msgspec.Meta(ge=1, le=7)]

MAX_TIME_LIMIT_S = 300
"""The longest search a dispatcher may ask for, and the cap of the scaled default."""


class NewPlan(msgspec.Struct, forbid_unknown_fields=True):
    """`start_date` and `end_date` are required, except for a campaign's plan: they then
    default to the campaign's period and must lie within it. Without `time_limit_s` the search
    gets a time limit that grows with the plan (its visits times its caravan-days, at most
    300 s); the plan states the limit it used."""

    org_id: str
    start_date: date | None = None
    end_date: date | None = None
    campaign_id: str | None = None
    caravan_ids: Annotated[list[str], msgspec.Meta(min_length=1, max_length=200)] | None = None
    request_ids: Annotated[list[str], msgspec.Meta(max_length=5000)] | None = None
    time_limit_s: Annotated[int, msgspec.Meta(ge=1, le=MAX_TIME_LIMIT_S)] | None = None
    weekdays: Annotated[list[Weekday], msgspec.Meta(min_length=1, max_length=7)] = msgspec.field(
        default_factory=lambda: [1, 2, 3, 4, 5]
    )
    duty_start: HHMM = "07:00"
    duty_end: HHMM = "19:00"
    max_duty_h: Annotated[float, msgspec.Meta(gt=0, le=16)] = 9.0


class NewPin(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str
    caravan_id: str
    date: date


class Exclusion(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str


class Queued(msgspec.Struct):
    id: str
    status: str


class StopOut(msgspec.Struct):
    site_id: str
    request_id: str
    arrive_at: datetime
    start_at: datetime
    depart_at: datetime
    site_name: str = ""  # the site as the dispatcher knows it, beside its id


class RouteOut(msgspec.Struct):
    """One caravan-day. It leaves `depot_id` and ends at `end_depot_id`: today always the same
    depot, as every duty day is a round trip. Multi-day tours with overnight stops at another
    depot (a later step) fit as days that end where the next one starts; the solver would then
    take each caravan-day's end depot too (PyVRP vehicle types have both)."""

    caravan_id: str
    date: str
    depot_id: str
    end_depot_id: str
    leave_at: datetime
    return_at: datetime
    stops: list[StopOut]
    distance_km: float
    duration_min: float


class StayOut(msgspec.Struct):
    """A stay as planned: its unit (`caravan_id`, from its depot `depot_id`) occupies the site
    from `setup_from` to `teardown_until` and it is open from `first_day` to `last_day` (both
    ends included, weekends too); no route of that unit falls on those days. `distance_km`
    is the unit's drive from its depot and back, not in the plan's `total_distance_km`."""

    request_id: str
    site_id: str
    caravan_id: str
    depot_id: str
    setup_from: str
    first_day: str
    last_day: str
    teardown_until: str
    distance_km: float
    site_name: str = ""


class UnassignedOut(msgspec.Struct):
    request_id: str
    reason: str
    detail: str = ""


class PinOut(msgspec.Struct):
    request_id: str
    caravan_id: str
    date: str


class PublishedVisit(msgspec.Struct):
    """A published visit's activity; a stay has one per opening day, each with its `date`."""

    request_id: str
    activity_id: str
    date: str | None = None


class PlanTotals(msgspec.Struct):
    """What one run of a plan planned: its number (`runs` counts them), the km driven, the
    visits and stays planned and the requests left unassigned."""

    run: int
    distance_km: float
    visits: int
    unassigned: int
    stays: int = 0


class PlanOut(msgspec.Struct):
    """A plan and its latest result. `time_limit_s` is the search's time limit: the one asked
    for (`requested_time_limit_s`), or else the default scaled to the plan, computed again when
    a solve starts. `iterations` is the effort of the latest search (summed over the searches
    run side by side, `searches`). `totals` sums up the latest result, `previous` the result
    it replaced (the run before, for comparison; None until a plan is solved twice)."""

    id: str
    org_id: str
    campaign_id: str | None
    status: str
    progress: float
    best_cost: int | None
    start_date: str
    end_date: str
    time_limit_s: int
    requested_time_limit_s: int | None
    iterations: int
    searches: int
    caravan_ids: list[str]
    request_ids: list[str]
    routes: list[RouteOut]
    unassigned: list[UnassignedOut]
    total_distance_km: float
    pins: list[PinOut]
    excluded: list[str]
    runs: int
    totals: PlanTotals | None
    previous: PlanTotals | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    published_at: datetime | None
    published: list[PublishedVisit]
    stays: list[StayOut] = []


class PlanSummary(msgspec.Struct):
    id: str
    org_id: str
    campaign_id: str | None
    status: str
    progress: float
    start_date: str
    end_date: str
    caravans: int
    requests: int
    routes: int
    unassigned: int
    total_distance_km: float
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    published_at: datetime | None


class PlanPage(msgspec.Struct):
    items: list[PlanSummary]
    next_cursor: str | None


class PublishOut(msgspec.Struct):
    status: str
    published: list[PublishedVisit]
    skipped: list[UnassignedOut]
