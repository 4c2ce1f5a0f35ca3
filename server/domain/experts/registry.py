"""The experts: volunteers the association registered with their fields, home city and the
dates they are free. Owns the `experts` collection."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from server import geo
from server.domain import identity, orgs
from server.domain.errors import Conflict, InvalidRequest, NotFound
from server.domain.ids import fetch, parse_id
from server.domain.paging import page_by_id
from server.domain.text import line

FIELDS: tuple[str, ...] = (
    "农业",
    "医疗卫生",
    "应急",
    "生态环境",
    "信息技术",
    "气象",
    "能源",
    "食品安全",
    "智能制造",
    "航空航天",
    "心理健康",
)
"""The fields experts cover and requests ask for: extend the vocabulary here."""
Field = Literal[FIELDS]  # type: ignore[valid-type]
Fields = Annotated[list[Field], msgspec.Meta(min_length=1, max_length=len(FIELDS))]
Dates = Annotated[list[date], msgspec.Meta(max_length=366)]


class NewExpert(msgspec.Struct, forbid_unknown_fields=True):
    """`name`: by default the volunteer's real name."""

    user_id: str
    fields: Fields
    home_city_id: str
    name: line(40) | None = None
    free_dates: Dates = []


class FreeDates(msgspec.Struct, forbid_unknown_fields=True):
    """The whole list of the dates the expert is free (it replaces the one before)."""

    dates: Dates


class ExpertOut(msgspec.Struct):
    id: str
    user_id: str
    name: str
    fields: list[str]
    home_city_id: str
    home_city_name: str
    free_dates: list[str]
    created_at: datetime


class ExpertPage(msgspec.Struct):
    items: list[ExpertOut]
    next_cursor: str | None


def _expert_out(doc: dict) -> ExpertOut:
    return ExpertOut(
        id=str(doc["_id"]),
        user_id=str(doc["user_id"]),
        name=doc["name"],
        fields=doc["fields"],
        home_city_id=str(doc["home_city_id"]),
        home_city_name=doc["home_city_name"],
        free_dates=doc["free_dates"],
        created_at=doc["created_at"],
    )


def iso_days(dates: list[date]) -> list[str]:
    return sorted({d.isoformat() for d in dates})


async def _home_city(ctx, home_city_id: str) -> tuple[dict, dict]:
    """The city organisation and its seat as a GeoJSON point."""
    city = await orgs.get_org(ctx, parse_id(home_city_id, "home_city_id"))
    if city["kind"] != "city":
        raise InvalidRequest("专家的常驻地须为市级组织", field="home_city_id")
    seat = geo.adcode_lookup(city["adcode"]) if city.get("adcode") else None
    if seat is None or seat["lng"] is None:
        raise InvalidRequest("该市级组织未登记行政区划代码，无法计算专家路程", field="home_city_id")
    return city, geo.geojson_point(seat["lng"], seat["lat"])


def _already() -> Conflict:
    return Conflict("该志愿者已登记为专家", code="already_expert", field="user_id")


async def register_expert(ctx, new: NewExpert, *, by: ObjectId | None) -> ObjectId:
    user = await identity.get_user(ctx, parse_id(new.user_id, "user_id"))
    if await ctx.db["experts"].find_one({"user_id": user["_id"]}, {"_id": 1}):
        raise _already()
    name = (new.name or user.get("real_name") or "").strip()
    if not name:
        raise InvalidRequest("该志愿者未填写姓名，请填写专家姓名", field="name")
    city, home = await _home_city(ctx, new.home_city_id)
    doc = {
        "_id": ObjectId(),
        "user_id": user["_id"],
        "name": name,
        "fields": list(dict.fromkeys(new.fields)),
        "home_city_id": city["_id"],
        "home_city_name": city["name"],
        "home": home,
        "free_dates": iso_days(new.free_dates),
        "active": True,
        "created_by": by,
        "created_at": ctx.clock.now(),
    }
    try:
        await ctx.db["experts"].insert_one(doc)
    except DuplicateKeyError:  # registered meanwhile
        raise _already() from None
    return doc["_id"]


async def get_expert(ctx, expert_id) -> ExpertOut:
    return _expert_out(await get_expert_doc(ctx, expert_id))


async def expert_of_user(ctx, user_id: ObjectId) -> ExpertOut:
    doc = await ctx.db["experts"].find_one({"user_id": user_id})
    if doc is None:
        raise NotFound("你还不是登记的首席科普专家")
    return _expert_out(doc)


async def set_free_dates(ctx, expert_id, dates: list[date]) -> ExpertOut:
    """Replace the expert's free dates. A visit already published stays: it is the expert's."""
    expert = parse_id(expert_id, "expert_id")
    result = await ctx.db["experts"].update_one(
        {"_id": expert}, {"$set": {"free_dates": iso_days(dates)}}
    )
    if not result.matched_count:
        raise NotFound("专家不存在", field="expert_id")
    return await get_expert(ctx, expert)


async def set_my_free_dates(ctx, user_id: ObjectId, dates: list[date]) -> ExpertOut:
    return await set_free_dates(ctx, (await expert_of_user(ctx, user_id)).id, dates)


async def list_experts(ctx, field: str | None, cursor: str | None, limit: int) -> ExpertPage:
    query = {"fields": field} if field else {}
    docs, following = await page_by_id(ctx.db["experts"], query, cursor, limit)
    return ExpertPage(items=[_expert_out(d) for d in docs], next_cursor=following)


async def get_expert_doc(ctx, expert_id) -> dict:
    return await fetch(ctx.db["experts"], expert_id, "expert_id", "专家不存在")


async def active_experts(ctx) -> list[dict]:
    return await ctx.db["experts"].find({"active": True}).to_list(None)


async def expert_names(ctx, expert_ids: list[ObjectId]) -> dict[ObjectId, str]:
    found = ctx.db["experts"].find({"_id": {"$in": expert_ids}}, {"name": 1})
    return {e["_id"]: e["name"] async for e in found}
