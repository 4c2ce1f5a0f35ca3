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

from server.domain import hours, orgs, signups, sites
from server.domain.errors import Conflict, Forbidden, InvalidRequest, NotFound
from server.domain.ids import fetch, parse_id

VehicleTypeIn = Literal["I", "II", "IV", "Ⅰ", "Ⅱ", "Ⅳ"]
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


# -- visit requests ---------------------------------------------------------------------------


async def create_request(
    ctx, new: NewVisitRequest, *, created_by: ObjectId | None = None
) -> ObjectId:
    site = await sites.get_site_doc(ctx, new.site_id)
    if new.latest_date < new.earliest_date:
        raise InvalidRequest("最晚日期不能早于最早日期", field="latest_date")
    if new.latest_date < ctx.clock.local_now().date():
        raise InvalidRequest("最晚日期已过", field="latest_date")
    doc = {
        "_id": ObjectId(),
        "site_id": site["_id"],
        "org_id": site["org_id"],
        "earliest_date": new.earliest_date.isoformat(),
        "latest_date": new.latest_date.isoformat(),
        "duration_min": new.duration_min,
        "audience": new.audience if new.audience is not None else site.get("audience"),
        "priority": new.priority,
        "status": "open",
        "created_by": created_by,
        "created_at": ctx.clock.now(),
    }
    await ctx.db["visit_requests"].insert_one(doc)
    return doc["_id"]


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
        visits.append(
            {
                "request_id": request_id,
                "site_id": request["site_id"],
                "activity_id": request.get("activity_id"),
                "duration_min": request["duration_min"],
                "beneficiaries": visit.beneficiaries,
                "confirmed": False,
            }
        )
    doc = {
        "_id": ObjectId(),
        "caravan_id": caravan["_id"],
        "org_id": caravan["org_id"],
        "date": new.date.isoformat(),
        "year": new.date.year,
        "odometer_start_km": new.odometer_start_km,
        "odometer_end_km": new.odometer_end_km,
        "km": round(new.odometer_end_km - new.odometer_start_km, 1),
        "visits": visits,
        "logged_by": logged_by,
        "logged_at": ctx.clock.now(),
    }
    try:
        await ctx.db["trips"].insert_one(doc)
    except DuplicateKeyError:
        raise Conflict("该车当天已登记出车", code="trip_logged", field="date") from None
    await ctx.db["caravans"].update_one(
        {"_id": caravan["_id"]}, {"$max": {"odometer_km": new.odometer_end_km}}
    )
    return doc["_id"]


async def trip_org(ctx, trip_id) -> ObjectId:
    doc = await ctx.db["trips"].find_one({"_id": parse_id(trip_id, "trip_id")}, {"org_id": 1})
    if doc is None:
        raise NotFound("出车记录不存在", field="trip_id")
    return doc["org_id"]


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
    await ctx.db["trips"].update_one(
        {"_id": trip_id, "visits.request_id": request_id, "visits.confirmed": {"$ne": True}},
        {
            "$set": {
                "visits.$.confirmed": True,
                "visits.$.confirmed_by": by,
                "visits.$.confirmed_at": ctx.clock.now(),
            }
        },
    )
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
