"""The fleet: depots (where caravans are kept) and the caravans themselves.

A caravan is edited (name, plate, type, crew size, home depot) with the checks of its
registration, and retired rather than deleted: its trips and KPIs keep naming it, and no plan
takes it again. Its maintenance days (`unavailable`, ISO dates) are days the planner makes no
caravan-day of; they are set as a whole list, so the console's form is the list it shows.

The association sets a caravan's target for a year (field days, km, or both) on the caravan's
document, under `targets.<year>`; the progress toward it is the trips' (`trips.target_progress`).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from server.domain import access, orgs, sites
from server.domain.errors import Conflict, InvalidRequest
from server.domain.ids import fetch, parse_id
from server.domain.paging import page_by_id
from server.domain.text import line

VehicleTypeIn = Literal["I", "II", "IV", "Ⅰ", "Ⅱ", "Ⅳ"]
VEHICLE_TYPES = {"I": "I", "II": "II", "IV": "IV", "Ⅰ": "I", "Ⅱ": "II", "Ⅳ": "IV"}
Name = line(100)


class NewDepot(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    org_id: str
    location: sites.LocationIn
    address: line(200, 0) | None = None


class NewCaravan(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    plate: line(12, 5)
    vehicle_type: VehicleTypeIn
    depot_id: str
    org_id: str
    crew_size: Annotated[int, msgspec.Meta(ge=1, le=20)] = 4
    odometer_km: Annotated[float, msgspec.Meta(ge=0, le=10_000_000)] = 0


class CaravanChange(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The fields of a caravan to change, each as `NewCaravan` constrains it; the organisation
    and the odometer (trip logs move it) stay."""

    name: Name | None = None
    plate: line(12, 5) | None = None
    vehicle_type: VehicleTypeIn | None = None
    depot_id: str | None = None
    crew_size: Annotated[int, msgspec.Meta(ge=1, le=20)] | None = None


class Unavailable(msgspec.Struct, forbid_unknown_fields=True):
    """The caravan's maintenance days, all of them: the list replaces the one stored."""

    dates: Annotated[list[date], msgspec.Meta(max_length=366)]


class YearTarget(msgspec.Struct, forbid_unknown_fields=True):
    """A caravan's target for one year, as a whole: a field left out has no target, and both left
    out remove the year's target."""

    year: Annotated[int, msgspec.Meta(ge=2000, le=2100)]
    field_days: Annotated[int, msgspec.Meta(ge=1, le=366)] | None = None
    km: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)] | None = None


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
    unavailable: list[str] = []
    retired_at: datetime | None = None


class CaravanPage(msgspec.Struct):
    items: list[CaravanOut]
    next_cursor: str | None


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
    depot = await _home_depot(ctx, new.depot_id, org_id, created_by)
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
        raise _plate_taken(plate) from None
    return doc["_id"]


async def _home_depot(ctx, depot_id: str, org_id: ObjectId, by: ObjectId | None) -> dict:
    """The caravan's home depot belongs to its organisation or one above it (a shared centre);
    any other depot must at least be one the caller manages to be named at all."""
    depot = await get_depot_doc(ctx, depot_id)
    if depot["org_id"] not in await orgs.lineage(ctx, org_id):
        await access.require_each(ctx, by, "fleet.manage", [depot], "depot_id")
        raise InvalidRequest("车场不属于该组织或其上级组织", field="depot_id")
    return depot


def _plate_taken(plate: str) -> Conflict:
    return Conflict(f"车牌 {plate} 已登记", code="plate_taken", field="plate")


async def edit_caravan(
    ctx, caravan_id, change: CaravanChange, *, by: ObjectId | None = None
) -> CaravanOut:
    """Change a caravan's description; validated as `create_caravan` validates a new one."""
    doc = await get_caravan_doc(ctx, caravan_id)
    fields: dict = {}
    if change.name is not None:
        if not change.name.strip():
            raise InvalidRequest("名称不能为空", field="name")
        fields["name"] = change.name.strip()
    if change.plate is not None:
        fields["plate"] = change.plate.strip().upper()
    if change.vehicle_type is not None:
        fields["vehicle_type"] = VEHICLE_TYPES[change.vehicle_type]
    if change.depot_id is not None:
        fields["depot_id"] = (await _home_depot(ctx, change.depot_id, doc["org_id"], by))["_id"]
    if change.crew_size is not None:
        fields["crew_size"] = change.crew_size
    if fields:
        try:
            await ctx.db["caravans"].update_one({"_id": doc["_id"]}, {"$set": fields})
        except DuplicateKeyError:
            raise _plate_taken(fields["plate"]) from None
    return _caravan_out(await get_caravan_doc(ctx, doc["_id"]))


async def retire_caravan(ctx, caravan_id, *, by: ObjectId | None = None) -> CaravanOut:
    """Take a caravan out of service for good; retiring it again changes nothing."""
    doc = await get_caravan_doc(ctx, caravan_id)
    await ctx.db["caravans"].update_one(
        {"_id": doc["_id"], "active": True},
        {"$set": {"active": False, "retired_at": ctx.clock.now(), "retired_by": by}},
    )
    return _caravan_out(await get_caravan_doc(ctx, doc["_id"]))


async def set_unavailable(ctx, caravan_id, dates: list[date]) -> CaravanOut:
    doc = await get_caravan_doc(ctx, caravan_id)
    days = sorted({d.isoformat() for d in dates})
    await ctx.db["caravans"].update_one({"_id": doc["_id"]}, {"$set": {"unavailable": days}})
    return _caravan_out(await get_caravan_doc(ctx, doc["_id"]))


async def store_target(ctx, caravan_id, target: YearTarget, *, by: ObjectId | None) -> dict:
    """Store (or, with neither figure, remove) a caravan's target for a year; the caravan's
    document as it now is."""
    doc = await get_caravan_doc(ctx, caravan_id)
    key = f"targets.{target.year}"
    if target.field_days is None and target.km is None:
        change: dict = {"$unset": {key: ""}}
    else:
        figures = {"field_days": target.field_days, "km": target.km}
        change = {"$set": {key: {**figures, "set_by": by, "set_at": ctx.clock.now()}}}
    await ctx.db["caravans"].update_one({"_id": doc["_id"]}, change)
    return await get_caravan_doc(ctx, doc["_id"])


def target_of(caravan: dict, year: int) -> dict | None:
    """The caravan's target for the year (field_days, km, set_by, set_at), if one was set."""
    return caravan.get("targets", {}).get(str(year))


async def targeted_caravans(ctx, org_ids: list[ObjectId], year: int) -> list[dict]:
    """The caravans of these organisations with a target for the year (read by the org index;
    an organisation keeps a handful of caravans)."""
    query = {"org_id": {"$in": org_ids}, f"targets.{year}": {"$exists": True}}
    return await ctx.db["caravans"].find(query).sort([("_id", 1)]).to_list(None)


async def get_caravan_doc(ctx, caravan_id) -> dict:
    return await fetch(ctx.db["caravans"], caravan_id, "caravan_id", "大篷车不存在")


async def caravans_for_plan(
    ctx, org_id: ObjectId, caravan_ids: list[ObjectId] | None
) -> list[dict]:
    """The active caravans of the organisation's subtree (all, or those named); a retired one
    named is refused."""
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
    return CaravanPage(items=[_caravan_out(d) for d in docs], next_cursor=following)


def _caravan_out(d: dict) -> CaravanOut:
    return CaravanOut(
        id=str(d["_id"]),
        name=d["name"],
        plate=d["plate"],
        vehicle_type=d["vehicle_type"],
        depot_id=str(d["depot_id"]),
        org_id=str(d["org_id"]),
        crew_size=d["crew_size"],
        odometer_km=d["odometer_km"],
        active=d["active"],
        unavailable=d.get("unavailable", []),
        retired_at=d.get("retired_at"),
    )
