"""Trip logs: one caravan's duty day, its odometer readings and the people reached per visit.
The site's admin confirms each visit, and the crew who checked in on that visit's activity then
have the hours their attendance earned confirmed (a crew member who signed up but never checked
in earns nothing). What statistics and targets read off the logs is in `trip_figures`.

A stay is logged as a visit on the trip of each opening day, with that day's visitors and
activity. A visit whose request was declined or cancelled is not logged; a request with a
logged visit is not withdrawn (visit_requests checks after its write, `log_trip` after its
own, so of a withdrawal and a trip log racing one is refused).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import msgspec
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from server.domain import access, attendance, events, hours, orgs, sites
from server.domain.caravans.fleet import get_caravan_doc
from server.domain.caravans.visit_requests import (
    CLOSED,
    check_range,
    is_stay,
    request_doc,
    requests_by_id,
)
from server.domain.errors import Conflict, Forbidden, InvalidRequest, NotFound
from server.domain.ids import parse_id
from server.domain.paging import IdCursor, encode_cursor, page_by_id

MAX_DAY_KM = 2000


class TripVisitIn(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str
    beneficiaries: Annotated[int, msgspec.Meta(ge=0, le=100_000)]


class NewTrip(msgspec.Struct, forbid_unknown_fields=True):
    caravan_id: str
    date: date
    odometer_start_km: Annotated[float, msgspec.Meta(ge=0, le=10_000_000)]
    odometer_end_km: Annotated[float, msgspec.Meta(ge=0, le=10_000_000)]
    visits: Annotated[list[TripVisitIn], msgspec.Meta(max_length=20)] = []


class VisitConfirmed(msgspec.Struct):
    request_id: str
    beneficiaries: int
    crew_credited: int
    hours_credited: float


class TripVisitOut(msgspec.Struct):
    request_id: str
    site_id: str
    activity_id: str | None
    duration_min: int
    beneficiaries: int
    confirmed: bool


class TripOut(msgspec.Struct):
    id: str
    caravan_id: str
    org_id: str
    date: str
    odometer_start_km: float
    odometer_end_km: float
    km: float
    visits: list[TripVisitOut]
    logged_at: datetime


class TripPage(msgspec.Struct):
    items: list[TripOut]
    next_cursor: str | None


async def log_trip(ctx, new: NewTrip, *, logged_by: ObjectId) -> ObjectId:
    caravan = await get_caravan_doc(ctx, new.caravan_id)
    if new.odometer_end_km < new.odometer_start_km:
        raise InvalidRequest("结束里程不能小于出发里程", field="odometer_end_km")
    if new.odometer_end_km - new.odometer_start_km > MAX_DAY_KM:
        raise InvalidRequest(f"单日行驶超过 {MAX_DAY_KM} 公里，请核对里程", field="odometer_end_km")
    if new.date > ctx.clock.local_now().date():
        raise InvalidRequest("不能登记未来日期的出车", field="date")
    logged = {"caravan_id": caravan["_id"], "date": new.date.isoformat()}
    if await ctx.db["trips"].find_one(logged, {"_id": 1}):
        raise Conflict("该车当天已登记出车", code="trip_logged", field="date")
    ids = [parse_id(v.request_id, f"visits[{i}].request_id") for i, v in enumerate(new.visits)]
    if len(set(ids)) != len(ids):
        raise InvalidRequest("同一走访申请重复登记", field="visits")
    requests = await requests_by_id(ctx, ids)
    subtree = set(await orgs.subtree_ids(ctx, caravan["org_id"]))
    visits = []
    for i, (request_id, visit) in enumerate(zip(ids, new.visits, strict=True)):
        field = f"visits[{i}].request_id"
        request = requests.get(request_id)
        if request is None:
            raise NotFound("走访申请不存在", field=field)
        if request["status"] in CLOSED:
            raise Conflict("走访申请已取消或被拒绝，不能登记", code="request_closed", field=field)
        scheduled_to = request.get("caravan_id")
        if scheduled_to is not None and scheduled_to != caravan["_id"]:
            raise InvalidRequest("该走访已排给另一辆大篷车", field=field)
        if scheduled_to is None and request["org_id"] not in subtree:
            raise InvalidRequest("走访申请不属于该大篷车的组织", field=field)
        if is_stay(request):  # logged once per opening day: its unit has one trip a day
            if new.date.isoformat() not in request.get("stay_activities", {}):
                raise InvalidRequest("该日期不是这次驻留已发布的开放日", field=field)
        elif await ctx.db["trips"].find_one({"visits.request_id": request_id}, {"_id": 1}):
            raise Conflict("该走访已登记在另一次出车中", code="visit_logged", field=field)
        visits.append(_visit_entry(request, visit.beneficiaries, day=new.date.isoformat()))
    doc = _trip_doc(
        ctx, caravan, new.date, new.odometer_start_km, new.odometer_end_km, visits, logged_by
    )
    try:
        await ctx.db["trips"].insert_one(doc)
    except DuplicateKeyError:
        raise Conflict("该车当天已登记出车", code="trip_logged", field="date") from None
    withdrawn = [r for r in (await requests_by_id(ctx, ids)).values() if r["status"] in CLOSED]
    if withdrawn:  # withdrawn while this was being logged (see the module's docstring)
        await ctx.db["trips"].delete_one({"_id": doc["_id"]})
        raise Conflict("走访申请已取消或被拒绝，不能登记", code="request_closed", field="visits")
    await ctx.db["caravans"].update_one(
        {"_id": caravan["_id"]}, {"$max": {"odometer_km": new.odometer_end_km}}
    )
    await events.emit(
        ctx, events.TRIP_LOGGED, org_id=doc["org_id"], caravan_id=doc["caravan_id"],
        date=doc["date"], km=doc["km"],
    )  # fmt: skip
    return doc["_id"]


def _visit_entry(request: dict, beneficiaries: int, *, confirmed=False, day=None) -> dict:
    return {
        "request_id": request["_id"],
        "site_id": request["site_id"],
        "activity_id": request.get("stay_activities", {}).get(day, request.get("activity_id")),
        "duration_min": request["duration_min"],
        "beneficiaries": beneficiaries,
        "confirmed": confirmed,
    }


def _trip_doc(
    ctx,
    caravan: dict,
    day: date,
    start_km: float,
    end_km: float,
    visits: list,
    logged_by: ObjectId | None,
) -> dict:
    """The one shape of a logged trip."""
    return {
        "_id": ObjectId(),
        "caravan_id": caravan["_id"],
        "org_id": caravan["org_id"],
        "date": day.isoformat(),
        "year": day.year,
        "odometer_start_km": start_km,
        "odometer_end_km": end_km,
        "km": round(end_km - start_km, 1),
        "visits": visits,
        "logged_by": logged_by,
        "logged_at": ctx.clock.now(),
    }


class PastTrip(msgspec.Struct):
    """A trip of earlier records, for bulk loads: each visit as (site, beneficiaries)."""

    caravan: dict
    date: date
    odometer_start_km: float
    odometer_end_km: float
    visits: list[tuple[dict, int]]
    duration_min: int = 90


async def import_trips(ctx, trips: list[PastTrip]) -> int:
    """Bulk path for data loads: each visit becomes a visited request, each trip a trip log with
    its visits confirmed, in the shapes the single paths write."""
    requests, docs = [], []
    for trip in trips:
        visits = []
        for site, people in trip.visits:
            request = request_doc(ctx, site, trip.date, trip.date, trip.duration_min, None, 5, None,
                                  status="scheduled", caravan_id=trip.caravan["_id"])  # fmt: skip
            requests.append(request)
            visits.append(_visit_entry(request, people, confirmed=True))
        docs.append(
            _trip_doc(
                ctx,
                trip.caravan,
                trip.date,
                trip.odometer_start_km,
                trip.odometer_end_km,
                visits,
                None,
            )
        )
    if requests:
        await ctx.db["visit_requests"].insert_many(requests, ordered=False)
    if docs:
        await ctx.db["trips"].insert_many(docs, ordered=False)
    return len(docs)


async def list_trips(
    ctx,
    org_ids: list[ObjectId],
    *,
    caravan_id: str | None = None,
    start: date | None = None,
    end: date | None = None,
    cursor: str | None = None,
    limit: int,
) -> TripPage:
    """Trip logs of these organisations' caravans, the latest logged first."""
    query: dict = {"org_id": {"$in": org_ids}}
    if caravan_id is not None:
        query["caravan_id"] = parse_id(caravan_id, "caravan_id")
    days: dict = {}
    if start is not None:
        days["$gte"] = start.isoformat()
    if end is not None:
        check_range(start, end)
        days["$lte"] = end.isoformat()
    if days:
        query["date"] = days
    docs, following = await page_by_id(ctx.db["trips"], query, cursor, limit, newest_first=True)
    items = [
        TripOut(
            id=str(d["_id"]),
            caravan_id=str(d["caravan_id"]),
            org_id=str(d["org_id"]),
            date=d["date"],
            odometer_start_km=d["odometer_start_km"],
            odometer_end_km=d["odometer_end_km"],
            km=d["km"],
            visits=[
                TripVisitOut(
                    request_id=str(v["request_id"]),
                    site_id=str(v["site_id"]),
                    activity_id=str(v["activity_id"]) if v.get("activity_id") else None,
                    duration_min=v["duration_min"],
                    beneficiaries=v["beneficiaries"],
                    confirmed=v["confirmed"],
                )
                for v in d["visits"]
            ],
            logged_at=d["logged_at"],
        )
        for d in docs
    ]
    return TripPage(items=items, next_cursor=following)


class SiteVisitOut(msgspec.Struct):
    trip_id: str
    request_id: str
    caravan_id: str
    date: str
    duration_min: int
    beneficiaries: int
    confirmed: bool
    activity_id: str | None


class SiteVisitPage(msgspec.Struct):
    items: list[SiteVisitOut]
    next_cursor: str | None


async def site_visits(
    ctx, site_id, *, confirmed: bool | None = None, cursor: str | None = None, limit: int
) -> SiteVisitPage:
    """The caravan visits logged at a site, the latest trip first: what its admin confirms.

    Pages are full until the last: trips are read a page at a time until enough of their visits
    match ``confirmed``, since the embedded server scans for an ``$elemMatch`` (a site has a few
    trips a year, so the reads stay short)."""
    site_id = parse_id(site_id, "site_id")
    items: list[SiteVisitOut] = []
    position = cursor
    while True:
        docs, following = await page_by_id(
            ctx.db["trips"], {"visits.site_id": site_id}, position, limit, newest_first=True
        )
        for n, d in enumerate(docs):
            items += [
                _site_visit(d, v)
                for v in d["visits"]
                if v["site_id"] == site_id and confirmed in (None, v["confirmed"])
            ]
            if len(items) >= limit:
                more = n + 1 < len(docs) or following is not None
                after = encode_cursor(IdCursor(i=d["_id"])) if more else None
                return SiteVisitPage(items=items, next_cursor=after)
        if following is None:
            return SiteVisitPage(items=items, next_cursor=None)
        position = following


def _site_visit(trip: dict, visit: dict) -> SiteVisitOut:
    return SiteVisitOut(
        trip_id=str(trip["_id"]),
        request_id=str(visit["request_id"]),
        caravan_id=str(trip["caravan_id"]),
        date=trip["date"],
        duration_min=visit["duration_min"],
        beneficiaries=visit["beneficiaries"],
        confirmed=visit["confirmed"],
        activity_id=str(visit["activity_id"]) if visit.get("activity_id") else None,
    )


async def confirm_visit(ctx, trip_id, request_id, *, by: ObjectId) -> VisitConfirmed:
    """The site's admin confirms the people reached, and the hours of the crew who attended."""
    trip_id = parse_id(trip_id, "trip_id")
    request_id = parse_id(request_id, "request_id")
    trip = await ctx.db["trips"].find_one({"_id": trip_id})
    if trip is None:
        raise NotFound("出车记录不存在", field="trip_id")
    visit = next((v for v in trip["visits"] if v["request_id"] == request_id), None)
    if visit is None:
        raise NotFound("该出车记录没有这次走访", field="request_id")
    site = await sites.get_site_doc(ctx, visit["site_id"])
    if not await access.may(ctx, by, "visit.confirm", site=site):
        raise Forbidden("只有该站点的管理员可以确认受益人数")
    # $elemMatch: the same visit must be the one not yet confirmed, whatever its siblings are.
    first_confirmation = await ctx.db["trips"].update_one(
        {
            "_id": trip_id,
            "visits": {"$elemMatch": {"request_id": request_id, "confirmed": {"$ne": True}}},
        },
        {
            "$set": {
                "visits.$.confirmed": True,
                "visits.$.confirmed_by": by,
                "visits.$.confirmed_at": ctx.clock.now(),
            }
        },
    )
    if first_confirmation.modified_count:
        await events.emit(
            ctx, events.VISIT_CONFIRMED, org_id=trip["org_id"], caravan_id=trip["caravan_id"],
            site_id=site["_id"], date=trip["date"], beneficiaries=visit["beneficiaries"],
        )  # fmt: skip
    record_ids = []
    if visit.get("activity_id"):
        record_ids = await attendance.attended_credits(ctx, visit["activity_id"])
        # Confirming is idempotent, so a repeat confirms nothing twice.
        await hours.confirm(ctx, by, [str(r) for r in record_ids])
    credited = await hours.credit_values(ctx, record_ids)
    return VisitConfirmed(
        request_id=str(request_id),
        beneficiaries=visit["beneficiaries"],
        crew_credited=len(record_ids),
        hours_credited=sum(c.hours for c in credited),
    )
