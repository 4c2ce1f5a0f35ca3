"""Campaigns: caravans of several counties pooled for a period (沿黄科普行-style tours).

Owns the `campaigns` collection. A campaign names its organisation, its period and its caravans;
the caravans may come from different counties but all from the organisation's subtree. A plan
made for the campaign (server/domain/planning/) uses its caravans over (part of) its period
and the open requests of every site in the organisation's subtree.

A caravan is in at most one campaign on any day. Every campaign lists its caravan-days
(`"<caravan id>:<date>"`), and the unique index on that list refuses a second campaign that
shares one, even when two processes create campaigns at the same moment.

Each caravan-day still starts and ends at the caravan's home depot. Multi-day tours with
overnight stops at another depot are a later step; they fit this model: the campaign would
give each caravan-day its start and end depot (an itinerary beside `caravan_days`), and the
plan's routes already record both for every caravan-day.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated

import msgspec
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from server.domain import access, caravans, orgs
from server.domain.errors import Conflict, InvalidRequest
from server.domain.ids import fetch, parse_id
from server.domain.paging import page_by_id

MAX_DAYS = 92
"""A season: longer tours are several campaigns."""
SUMMARY = {"caravan_days": 0}
"""What reads load: everything but the (long) list of caravan-days."""


class NewCampaign(msgspec.Struct, forbid_unknown_fields=True):
    name: caravans.Name
    org_id: str
    start_date: date
    end_date: date
    caravan_ids: Annotated[list[str], msgspec.Meta(min_length=1, max_length=200)]


class CampaignOut(msgspec.Struct):
    id: str
    name: str
    org_id: str
    start_date: str
    end_date: str
    caravan_ids: list[str]
    created_at: datetime


class CampaignPage(msgspec.Struct):
    items: list[CampaignOut]
    next_cursor: str | None


async def create_campaign(ctx, new: NewCampaign, *, created_by: ObjectId | None = None) -> ObjectId:
    org_id = parse_id(new.org_id, "org_id")
    await orgs.get_org(ctx, org_id)
    if new.end_date < new.start_date:
        raise InvalidRequest("结束日期不能早于开始日期", field="end_date")
    span = (new.end_date - new.start_date).days + 1
    if span > MAX_DAYS:
        raise InvalidRequest(f"巡回行动不能超过 {MAX_DAYS} 天", field="end_date")
    if new.end_date < ctx.clock.local_now().date():
        raise InvalidRequest("结束日期已过", field="end_date")
    ids = [parse_id(c, f"caravan_ids[{i}]") for i, c in enumerate(new.caravan_ids)]
    named = await caravans.caravans_by_id(ctx, ids)
    await access.require_each(ctx, created_by, "plan.dispatch", list(named.values()), "caravan_ids")
    fleet = await caravans.caravans_for_plan(ctx, org_id, ids)
    days = [(new.start_date + timedelta(days=i)).isoformat() for i in range(span)]
    doc = {
        "_id": ObjectId(),
        "name": new.name.strip(),
        "org_id": org_id,
        "start_date": days[0],
        "end_date": days[-1],
        "caravan_ids": [c["_id"] for c in fleet],
        "caravan_days": [f"{c['_id']}:{day}" for c in fleet for day in days],
        "created_by": created_by,
        "created_at": ctx.clock.now(),
    }
    try:
        await ctx.db["campaigns"].insert_one(doc)
    except DuplicateKeyError:
        raise await _overlap(ctx, doc, fleet) from None
    return doc["_id"]


_HOLDER = {"name": 1, "start_date": 1, "end_date": 1, "caravan_ids": 1}


def _held(caravan: dict, other: dict, consequence: str) -> Conflict:
    return Conflict(
        f"大篷车 {caravan['plate']} 已加入同期的巡回行动「{other['name']}」"
        f"（{other['start_date']} 至 {other['end_date']}），{consequence}",
        code="caravan_in_campaign",
        field="caravan_ids",
    )


async def _overlap(ctx, doc: dict, fleet: list[dict]) -> Conflict:
    """Names the campaign that already holds one of these caravans on one of these days."""
    other = await ctx.db["campaigns"].find_one(
        {"caravan_days": {"$in": doc["caravan_days"]}}, _HOLDER
    )
    caravan = next(c for c in fleet if c["_id"] in other["caravan_ids"])
    return _held(caravan, other, "不能同时加入两个巡回行动")


async def outside_campaigns(ctx, fleet: list[dict], first: date, last: date, *, named: bool):
    """The caravans of `fleet` that no campaign holds on any day of [first, last], for a plan
    made outside campaigns. Caravans the dispatcher `named` must all be free: a held one is
    refused with the campaign that holds it; otherwise held ones are left out."""
    holders = (
        await ctx.db["campaigns"]
        .find(
            {
                "caravan_ids": {"$in": [c["_id"] for c in fleet]},
                "start_date": {"$lte": last.isoformat()},
                "end_date": {"$gte": first.isoformat()},
            },
            _HOLDER,
        )
        .to_list(None)
    )
    held = {caravan_id: other for other in holders for caravan_id in other["caravan_ids"]}
    for caravan in fleet:
        if named and caravan["_id"] in held:
            raise _held(caravan, held[caravan["_id"]], "请在该巡回行动中规划，或另选车辆、日期")
    return [c for c in fleet if c["_id"] not in held]


async def get_campaign_doc(ctx, campaign_id) -> dict:
    return await fetch(ctx.db["campaigns"], campaign_id, "campaign_id", "巡回行动不存在", SUMMARY)


def _campaign_out(doc: dict) -> CampaignOut:
    return CampaignOut(
        id=str(doc["_id"]),
        name=doc["name"],
        org_id=str(doc["org_id"]),
        start_date=doc["start_date"],
        end_date=doc["end_date"],
        caravan_ids=[str(c) for c in doc["caravan_ids"]],
        created_at=doc["created_at"],
    )


async def get_campaign(ctx, campaign_id) -> CampaignOut:
    return _campaign_out(await get_campaign_doc(ctx, campaign_id))


async def list_campaigns(
    ctx, org_ids: list[ObjectId], cursor: str | None, limit: int
) -> CampaignPage:
    """The campaigns of these organisations, newest first."""
    docs, following = await page_by_id(
        ctx.db["campaigns"],
        {"org_id": {"$in": org_ids}},
        cursor,
        limit,
        newest_first=True,
        projection=SUMMARY,
    )
    return CampaignPage(items=[_campaign_out(d) for d in docs], next_cursor=following)
