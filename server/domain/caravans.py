"""科普大篷车: depots, caravans, the visits sites ask for, trip logs and the caravan KPIs.

Owns the `depots`, `caravans`, `visit_requests` and `trips` collections. Planning (which caravan
visits which site on which day) lives in server/domain/planning.py and reaches these
collections only through the functions here.

A visit request moves open → scheduling → scheduled: `claim_for_publish` takes an open request
(or one whose publication stalled) for one plan's publication, `record_activity` notes the
activity made for it, `mark_scheduled` ends the publication. A trip log records one caravan's
duty day: odometer readings and the people reached per visit; the site's admin confirms each
visit, and the crew confirmed on that visit's activity are then credited its duration.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Annotated, Literal

import msgspec
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from server.clock import SHANGHAI
from server.domain import events, hours, orgs, signups, sites
from server.domain.errors import Conflict, Forbidden, InvalidRequest, NotFound
from server.domain.ids import fetch, parse_id
from server.domain.paging import page_by_id

VehicleTypeIn = Literal["I", "II", "IV", "Ⅰ", "Ⅱ", "Ⅳ"]
RequestStatus = Literal["open", "scheduling", "scheduled"]
VEHICLE_TYPES = {"I": "I", "II": "II", "IV": "IV", "Ⅰ": "I", "Ⅱ": "II", "Ⅳ": "IV"}
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
STALE_CLAIM = timedelta(minutes=2)
MAX_DAY_KM = 2000


class NewDepot(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    org_id: str
    location: sites.LocationIn
    address: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class NewCaravan(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    plate: Annotated[str, msgspec.Meta(min_length=5, max_length=12)]
    vehicle_type: VehicleTypeIn
    depot_id: str
    org_id: str
    crew_size: Annotated[int, msgspec.Meta(ge=1, le=20)] = 4
    odometer_km: Annotated[float, msgspec.Meta(ge=0, le=10_000_000)] = 0


class NewVisitRequest(msgspec.Struct, forbid_unknown_fields=True):
    site_id: str
    earliest_date: date
    latest_date: date
    duration_min: Annotated[int, msgspec.Meta(ge=30, le=480)]
    audience: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    priority: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5


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
    hours_each: float


class DepotOut(msgspec.Struct):
    id: str
    name: str
    org_id: str
    location: dict
    address: str | None


class DepotPage(msgspec.Struct):
    items: list[DepotOut]
    next_cursor: str | None


class CaravanOut(msgspec.Struct):
    id: str
    name: str
    plate: str
    vehicle_type: str
    depot_id: str
    org_id: str
    crew_size: int
    odometer_km: float
    active: bool


class CaravanPage(msgspec.Struct):
    items: list[CaravanOut]
    next_cursor: str | None


class VisitRequestOut(msgspec.Struct):
    id: str
    site_id: str
    org_id: str
    earliest_date: str
    latest_date: str
    duration_min: int
    audience: str | None
    priority: int
    status: str
    caravan_id: str | None
    date: str | None
    activity_id: str | None
    created_at: datetime


class VisitRequestPage(msgspec.Struct):
    items: list[VisitRequestOut]
    next_cursor: str | None


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


class Kpi(msgspec.Struct):
    activities: int
    km: float
    beneficiaries: int


class CaravanKpi(Kpi):
    caravan_id: str
    name: str
    plate: str


class CountyKpi(Kpi):
    org_id: str
    name: str


class Kpis(msgspec.Struct):
    year: int
    total: Kpi
    caravans: list[CaravanKpi]
    counties: list[CountyKpi]


# -- depots and caravans ----------------------------------------------------------------------


async def create_depot(ctx, new: NewDepot, *, created_by: ObjectId | None = None) -> ObjectId:
    org_id = parse_id(new.org_id, "org_id")
    await orgs.get_org(ctx, org_id)
    doc = {
        "_id": ObjectId(),
        "name": new.name.strip(),
        "org_id": org_id,
        "location": new.location.to_geojson(),
        "address": new.address,
        "created_by": created_by,
        "created_at": ctx.clock.now(),
    }
    await ctx.db["depots"].insert_one(doc)
    return doc["_id"]


async def get_depot_doc(ctx, depot_id) -> dict:
    return await fetch(ctx.db["depots"], depot_id, "depot_id", "车场不存在")


async def depots_by_id(ctx, depot_ids: list[ObjectId]) -> dict[ObjectId, dict]:
    cursor = ctx.db["depots"].find({"_id": {"$in": depot_ids}})
    return {doc["_id"]: doc async for doc in cursor}


async def list_depots(ctx, org_ids: list[ObjectId], cursor: str | None, limit: int) -> DepotPage:
    docs, following = await page_by_id(
        ctx.db["depots"], {"org_id": {"$in": org_ids}}, cursor, limit
    )
    items = [
        DepotOut(
            id=str(d["_id"]),
            name=d["name"],
            org_id=str(d["org_id"]),
            location=d["location"],
            address=d.get("address"),
        )
        for d in docs
    ]
    return DepotPage(items=items, next_cursor=following)


async def create_caravan(ctx, new: NewCaravan, *, created_by: ObjectId | None = None) -> ObjectId:
    org_id = parse_id(new.org_id, "org_id")
    await orgs.get_org(ctx, org_id)
    depot = await get_depot_doc(ctx, new.depot_id)
    # The caravan's home depot belongs to its organisation or one above it (a shared centre).
    if depot["org_id"] not in await orgs.lineage(ctx, org_id):
        raise InvalidRequest("车场不属于该组织或其上级组织", field="depot_id")
    plate = new.plate.strip().upper()
    doc = {
        "_id": ObjectId(),
        "name": new.name.strip(),
        "plate": plate,
        "vehicle_type": VEHICLE_TYPES[new.vehicle_type],
        "depot_id": depot["_id"],
        "org_id": org_id,
        "crew_size": new.crew_size,
        "odometer_km": new.odometer_km,
        "active": True,
        "created_by": created_by,
        "created_at": ctx.clock.now(),
    }
    try:
        await ctx.db["caravans"].insert_one(doc)
    except DuplicateKeyError:
        raise Conflict(f"车牌 {plate} 已登记", code="plate_taken", field="plate") from None
    return doc["_id"]


async def get_caravan_doc(ctx, caravan_id) -> dict:
    return await fetch(ctx.db["caravans"], caravan_id, "caravan_id", "大篷车不存在")


async def caravans_for_plan(
    ctx, org_id: ObjectId, caravan_ids: list[ObjectId] | None
) -> list[dict]:
    """The active caravans of the organisation's subtree (all, or those named)."""
    query: dict = {"org_id": {"$in": await orgs.subtree_ids(ctx, org_id)}, "active": True}
    if caravan_ids is not None:
        query["_id"] = {"$in": caravan_ids}
    docs = await ctx.db["caravans"].find(query).sort([("_id", 1)]).to_list(None)
    if caravan_ids is not None and len(docs) != len(set(caravan_ids)):
        raise InvalidRequest("部分大篷车不存在或不属于该组织", field="caravan_ids")
    return docs


async def caravans_by_id(ctx, caravan_ids: list[ObjectId]) -> dict[ObjectId, dict]:
    cursor = ctx.db["caravans"].find({"_id": {"$in": caravan_ids}})
    return {doc["_id"]: doc async for doc in cursor}


async def list_caravans(
    ctx, org_ids: list[ObjectId], cursor: str | None, limit: int
) -> CaravanPage:
    docs, following = await page_by_id(
        ctx.db["caravans"], {"org_id": {"$in": org_ids}}, cursor, limit
    )
    items = [
        CaravanOut(
            id=str(d["_id"]),
            name=d["name"],
            plate=d["plate"],
            vehicle_type=d["vehicle_type"],
            depot_id=str(d["depot_id"]),
            org_id=str(d["org_id"]),
            crew_size=d["crew_size"],
            odometer_km=d["odometer_km"],
            active=d["active"],
        )
        for d in docs
    ]
    return CaravanPage(items=items, next_cursor=following)


# -- visit requests ---------------------------------------------------------------------------


async def create_request(
    ctx, new: NewVisitRequest, *, created_by: ObjectId | None = None
) -> ObjectId:
    site = await sites.get_site_doc(ctx, new.site_id)
    if new.latest_date < new.earliest_date:
        raise InvalidRequest("最晚日期不能早于最早日期", field="latest_date")
    if new.latest_date < ctx.clock.local_now().date():
        raise InvalidRequest("最晚日期已过", field="latest_date")
    doc = _request_doc(
        ctx,
        site,
        new.earliest_date,
        new.latest_date,
        new.duration_min,
        new.audience,
        new.priority,
        created_by,
    )
    await ctx.db["visit_requests"].insert_one(doc)
    return doc["_id"]


def _request_doc(
    ctx,
    site: dict,
    earliest: date,
    latest: date,
    duration_min: int,
    audience: str | None,
    priority: int,
    created_by: ObjectId | None,
    **state,
) -> dict:
    """The one shape of a visit request (open, unless `state` says how far it got)."""
    return {
        "_id": ObjectId(),
        "site_id": site["_id"],
        "org_id": site["org_id"],
        "earliest_date": earliest.isoformat(),
        "latest_date": latest.isoformat(),
        "duration_min": duration_min,
        "audience": audience if audience is not None else site.get("audience"),
        "priority": priority,
        "status": "open",
        "created_by": created_by,
        "created_at": ctx.clock.now(),
        **state,
    }


async def get_request_doc(ctx, request_id) -> dict:
    return await fetch(ctx.db["visit_requests"], request_id, "request_id", "走访申请不存在")


async def open_requests(
    ctx, org_id: ObjectId, start: date, end: date, request_ids: list[ObjectId] | None
) -> list[dict]:
    """Open requests of the organisation's subtree whose date range meets [start, end]."""
    query: dict = {
        "org_id": {"$in": await orgs.subtree_ids(ctx, org_id)},
        "status": "open",
        "earliest_date": {"$lte": end.isoformat()},
        "latest_date": {"$gte": start.isoformat()},
    }
    if request_ids is not None:
        query["_id"] = {"$in": request_ids}
    docs = await ctx.db["visit_requests"].find(query).sort([("_id", 1)]).to_list(None)
    if request_ids is not None and len(docs) != len(set(request_ids)):
        raise InvalidRequest(
            "部分走访申请不存在、不属于该组织、已排期或不在计划日期内", field="request_ids"
        )
    return docs


async def requests_by_id(ctx, request_ids: list[ObjectId]) -> dict[ObjectId, dict]:
    cursor = ctx.db["visit_requests"].find({"_id": {"$in": request_ids}})
    return {doc["_id"]: doc async for doc in cursor}


async def list_requests(
    ctx,
    org_ids: list[ObjectId],
    *,
    status: str | None = None,
    site_id: str | None = None,
    start: date | None = None,
    end: date | None = None,
    cursor: str | None = None,
    limit: int,
) -> VisitRequestPage:
    """Requests of these organisations, oldest first; with a date range, those that may be
    visited within it (the ones a plan over that range would consider)."""
    query: dict = {"org_id": {"$in": org_ids}}
    if status is not None:
        query["status"] = status
    if site_id is not None:
        query["site_id"] = parse_id(site_id, "site_id")
    if start is not None:
        query["latest_date"] = {"$gte": start.isoformat()}
    if end is not None:
        _check_range(start, end)
        query["earliest_date"] = {"$lte": end.isoformat()}
    docs, following = await page_by_id(ctx.db["visit_requests"], query, cursor, limit)
    items = [
        VisitRequestOut(
            id=str(d["_id"]),
            site_id=str(d["site_id"]),
            org_id=str(d["org_id"]),
            earliest_date=d["earliest_date"],
            latest_date=d["latest_date"],
            duration_min=d["duration_min"],
            audience=d.get("audience"),
            priority=d["priority"],
            status=d["status"],
            caravan_id=str(d["caravan_id"]) if d.get("caravan_id") else None,
            date=d.get("date"),
            activity_id=str(d["activity_id"]) if d.get("activity_id") else None,
            created_at=d["created_at"],
        )
        for d in docs
    ]
    return VisitRequestPage(items=items, next_cursor=following)


def _check_range(start: date | None, end: date) -> None:
    if start is not None and end < start:
        raise InvalidRequest("结束日期不能早于开始日期", field="to")


async def claim_for_publish(ctx, request_id: ObjectId, plan_id: ObjectId) -> dict | None:
    """Takes the request for one plan's publication; None when it is (being) scheduled."""
    now = ctx.clock.now()
    return await ctx.db["visit_requests"].find_one_and_update(
        {
            "_id": request_id,
            "$or": [
                {"status": "open"},
                {"status": "scheduling", "claim_until": {"$lt": now}},
            ],
        },
        {"$set": {"status": "scheduling", "plan_id": plan_id, "claim_until": now + STALE_CLAIM}},
        return_document=ReturnDocument.AFTER,
    )


async def record_activity(ctx, request_id: ObjectId, activity_id: ObjectId) -> None:
    await ctx.db["visit_requests"].update_one(
        {"_id": request_id}, {"$set": {"activity_id": activity_id}}
    )


async def mark_scheduled(
    ctx, request_id: ObjectId, *, caravan_id: ObjectId, day: str, activity_id: ObjectId
) -> None:
    await ctx.db["visit_requests"].update_one(
        {"_id": request_id},
        {
            "$set": {
                "status": "scheduled",
                "caravan_id": caravan_id,
                "date": day,
                "activity_id": activity_id,
                "scheduled_at": ctx.clock.now(),
            },
            "$unset": {"claim_until": ""},
        },
    )


# -- trips ------------------------------------------------------------------------------------


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
        scheduled_to = request.get("caravan_id")
        if scheduled_to is not None and scheduled_to != caravan["_id"]:
            raise InvalidRequest("该走访已排给另一辆大篷车", field=field)
        if scheduled_to is None and request["org_id"] not in subtree:
            raise InvalidRequest("走访申请不属于该大篷车的组织", field=field)
        if await ctx.db["trips"].find_one({"visits.request_id": request_id}, {"_id": 1}):
            raise Conflict("该走访已登记在另一次出车中", code="visit_logged", field=field)
        visits.append(_visit_entry(request, visit.beneficiaries))
    doc = _trip_doc(
        ctx, caravan, new.date, new.odometer_start_km, new.odometer_end_km, visits, logged_by
    )
    try:
        await ctx.db["trips"].insert_one(doc)
    except DuplicateKeyError:
        raise Conflict("该车当天已登记出车", code="trip_logged", field="date") from None
    await ctx.db["caravans"].update_one(
        {"_id": caravan["_id"]}, {"$max": {"odometer_km": new.odometer_end_km}}
    )
    await events.emit(ctx, events.TRIP_LOGGED, org_id=doc["org_id"], date=doc["date"], km=doc["km"])
    return doc["_id"]


def _visit_entry(request: dict, beneficiaries: int, *, confirmed: bool = False) -> dict:
    return {
        "request_id": request["_id"],
        "site_id": request["site_id"],
        "activity_id": request.get("activity_id"),
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
            request = _request_doc(
                ctx,
                site,
                trip.date,
                trip.date,
                trip.duration_min,
                None,
                5,
                None,
                status="scheduled",
                caravan_id=trip.caravan["_id"],
            )
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


async def trip_org(ctx, trip_id) -> ObjectId:
    doc = await ctx.db["trips"].find_one({"_id": parse_id(trip_id, "trip_id")}, {"org_id": 1})
    if doc is None:
        raise NotFound("出车记录不存在", field="trip_id")
    return doc["org_id"]


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
        _check_range(start, end)
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


async def confirm_visit(ctx, trip_id, request_id, *, by: ObjectId) -> VisitConfirmed:
    """The site's admin confirms the people reached; the visit's crew is credited its hours."""
    trip_id = parse_id(trip_id, "trip_id")
    request_id = parse_id(request_id, "request_id")
    trip = await ctx.db["trips"].find_one({"_id": trip_id})
    if trip is None:
        raise NotFound("出车记录不存在", field="trip_id")
    visit = next((v for v in trip["visits"] if v["request_id"] == request_id), None)
    if visit is None:
        raise NotFound("该出车记录没有这次走访", field="request_id")
    site = await sites.get_site_doc(ctx, visit["site_id"])
    if not await sites.is_site_admin(ctx, by, site):
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
            ctx, events.VISIT_CONFIRMED, org_id=trip["org_id"], site_id=site["_id"],
            date=trip["date"], beneficiaries=visit["beneficiaries"],
        )  # fmt: skip
    hours_each = round(visit["duration_min"] / 60, 2)
    credited = 0
    if visit.get("activity_id"):
        # Crediting is idempotent per (volunteer, activity), so a repeat credits nobody twice.
        roster = await signups.roster(ctx, visit["activity_id"])
        record_ids = []
        for entry in roster.confirmed:
            record_ids.append(
                await hours.credit(
                    ctx,
                    user_id=ObjectId(entry.user_id),
                    hours=hours_each,
                    org_id=trip["org_id"],
                    source="caravan",
                    activity_id=visit["activity_id"],
                    site_id=site["_id"],
                    served_at=day_start(trip["date"]),
                    basis={"trip_id": trip_id, "request_id": request_id},
                    by=by,
                )
            )
        if record_ids:
            await hours.confirm(ctx, by, [str(r) for r in record_ids])
        credited = len(record_ids)
    return VisitConfirmed(
        request_id=str(request_id),
        beneficiaries=visit["beneficiaries"],
        crew_credited=credited,
        hours_each=hours_each,
    )


# -- KPIs -------------------------------------------------------------------------------------


async def kpis(ctx, year: int, org_id) -> Kpis:
    """活动次数 (confirmed visits), 行驶里程 (km of every logged trip) and 受益人次 (people
    reached, confirmed visits only) per caravan and per county, in one year (Shanghai dates)."""
    org_id = parse_id(org_id, "org_id")
    subtree = await orgs.subtree_ids(ctx, org_id)
    trips = await ctx.db["trips"].find({"org_id": {"$in": subtree}, "year": year}).to_list(None)
    per_caravan: dict[ObjectId, list] = defaultdict(lambda: [0, 0.0, 0])
    for trip in trips:
        row = per_caravan[trip["caravan_id"]]
        row[1] += trip["km"]
        for visit in trip["visits"]:
            if visit.get("confirmed"):
                row[0] += 1
                row[2] += visit["beneficiaries"]
    caravans = await caravans_by_id(ctx, list(per_caravan))
    org_docs = {
        d["_id"]: d
        async for d in ctx.db["orgs"].find(
            {"_id": {"$in": subtree}}, {"name": 1, "kind": 1, "ancestors": 1}
        )
    }

    def county_of(org: ObjectId) -> ObjectId:
        doc = org_docs.get(org)
        if doc is None or doc["kind"] == "county":
            return org
        for above in reversed(doc.get("ancestors", [])):
            if above in org_docs and org_docs[above]["kind"] == "county":
                return above
        return org

    per_county: dict[ObjectId, list] = defaultdict(lambda: [0, 0.0, 0])
    caravan_rows = []
    for caravan_id, (count, km, people) in sorted(per_caravan.items()):
        caravan = caravans.get(caravan_id, {})
        county = per_county[county_of(caravan.get("org_id"))]
        county[0], county[1], county[2] = county[0] + count, county[1] + km, county[2] + people
        caravan_rows.append(
            CaravanKpi(
                caravan_id=str(caravan_id),
                name=caravan.get("name", ""),
                plate=caravan.get("plate", ""),
                activities=count,
                km=round(km, 1),
                beneficiaries=people,
            )
        )
    county_rows = [
        CountyKpi(
            org_id=str(county),
            name=org_docs.get(county, {}).get("name", ""),
            activities=count,
            km=round(km, 1),
            beneficiaries=people,
        )
        for county, (count, km, people) in sorted(per_county.items(), key=lambda kv: str(kv[0]))
    ]
    return Kpis(
        year=year,
        total=Kpi(
            activities=sum(r.activities for r in caravan_rows),
            km=round(sum(r.km for r in caravan_rows), 1),
            beneficiaries=sum(r.beneficiaries for r in caravan_rows),
        ),
        caravans=caravan_rows,
        counties=county_rows,
    )


def parse_day(value: str | date) -> date:
    return value if isinstance(value, date) else datetime.strptime(value, "%Y-%m-%d").date()


def day_start(day: str | date) -> datetime:
    """Midnight of a Shanghai day, as an aware datetime."""
    return datetime.combine(parse_day(day), datetime.min.time(), SHANGHAI)


class TripFacts(msgspec.Struct, frozen=True):
    """What statistics need of a logged trip."""

    org_id: ObjectId
    date: str
    km: float
    visits: list[dict]  # site_id, beneficiaries, confirmed


async def trip_facts(ctx, start: date, end: date) -> list[TripFacts]:
    """Trips driven on Shanghai days in [start, end)."""
    query = {"date": {"$gte": start.isoformat(), "$lt": end.isoformat()}}
    fields = {"org_id": 1, "date": 1, "km": 1, "visits.site_id": 1,
              "visits.beneficiaries": 1, "visits.confirmed": 1}  # fmt: skip
    return [
        TripFacts(
            org_id=doc["org_id"],
            date=doc["date"],
            km=doc["km"],
            visits=[
                {
                    "site_id": v["site_id"],
                    "beneficiaries": v["beneficiaries"],
                    "confirmed": v.get("confirmed", False),
                }
                for v in doc["visits"]
            ],
        )
        async for doc in ctx.db["trips"].find(query, fields)
    ]
