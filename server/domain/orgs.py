"""Organisations as a tree: province → city → county, teams and bases under them. The roles
people hold in them are `access`'s.

Owns the `orgs` collection.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from bson import ObjectId

from server.domain.errors import InvalidRequest, NotFound
from server.domain.ids import fetch

OrgKind = Literal["province", "city", "county", "team", "base"]

# What kind of organisation may sit under what: the administrative tree, with teams and bases
# hanging from any level of it.
CHILD_KINDS: dict[str, frozenset[str]] = {
    "province": frozenset({"city", "team", "base"}),
    "city": frozenset({"county", "team", "base"}),
    "county": frozenset({"team", "base"}),
    "team": frozenset({"team"}),
    "base": frozenset(),
}


class Org(msgspec.Struct):
    id: str
    name: str
    kind: str
    parent_id: str | None
    depth: int
    adcode: str | None = None


def _org_out(doc: dict) -> Org:
    return Org(
        id=str(doc["_id"]),
        name=doc["name"],
        kind=doc["kind"],
        parent_id=str(doc["parent_id"]) if doc.get("parent_id") else None,
        depth=len(doc.get("ancestors", [])),
        adcode=doc.get("adcode"),
    )


async def get_org(ctx, org_id) -> dict:
    return await fetch(ctx.db["orgs"], org_id, "org_id", "组织不存在")


async def root_org(ctx) -> dict | None:
    return await ctx.db["orgs"].find_one({"parent_id": None})


async def create_org(
    ctx,
    name: str,
    kind: str,
    parent_id: ObjectId | None,
    *,
    adcode: str | None = None,
    created_by: ObjectId | None = None,
) -> ObjectId:
    name = name.strip()
    if not name:
        raise InvalidRequest("组织名称不能为空", field="name")
    if parent_id is None:
        if kind != "province":
            raise InvalidRequest("根组织必须是省级", field="kind")
        if await root_org(ctx) is not None:
            raise InvalidRequest("根组织已存在，请指定上级组织", field="parent_id")
        ancestors: list[ObjectId] = []
    else:
        parent = await get_org(ctx, parent_id)
        if kind not in CHILD_KINDS[parent["kind"]]:
            raise InvalidRequest(f"{parent['kind']} 下不能建立 {kind}", field="kind")
        ancestors = [*parent.get("ancestors", []), parent["_id"]]
    doc = {
        "_id": ObjectId(),
        "name": name,
        "kind": kind,
        "parent_id": parent_id,
        "ancestors": ancestors,
        "adcode": adcode,
        "created_by": created_by,
        "created_at": ctx.clock.now(),
    }
    await ctx.db["orgs"].insert_one(doc)
    return doc["_id"]


async def lineage(ctx, org_id: ObjectId) -> list[ObjectId]:
    """The organisation and everything above it, itself first."""
    doc = await ctx.db["orgs"].find_one({"_id": org_id}, {"ancestors": 1})
    if doc is None:
        raise NotFound("组织不存在", field="org_id")
    return [org_id, *reversed(doc.get("ancestors", []))]


async def subtree_ids(ctx, org_id: ObjectId) -> list[ObjectId]:
    """The organisation and everything below it; empty when there is no such organisation."""
    return await subtrees(ctx, [org_id])


class OrgNode(msgspec.Struct, frozen=True):
    """An organisation as statistics see it: its kind and its lineage (itself first)."""

    id: ObjectId
    name: str
    kind: str
    lineage: tuple[ObjectId, ...]
    created_at: datetime | None


async def nodes(ctx, org_ids: list[ObjectId] | None = None) -> dict[ObjectId, OrgNode]:
    """Organisations by id (all of them when `org_ids` is None; a province has a few
    thousand, so this is one small read)."""
    query = {} if org_ids is None else {"_id": {"$in": org_ids}}
    fields = {"name": 1, "kind": 1, "ancestors": 1, "created_at": 1}
    return {
        doc["_id"]: OrgNode(
            id=doc["_id"],
            name=doc["name"],
            kind=doc["kind"],
            lineage=(doc["_id"], *reversed(doc.get("ancestors", []))),
            created_at=doc.get("created_at"),
        )
        async for doc in ctx.db["orgs"].find(query, fields)
    }


async def subtrees(ctx, tops: list[ObjectId]) -> list[ObjectId]:
    """Every organisation in the subtrees of `tops`, the tops included."""
    if not tops:
        return []
    # Two indexed reads (`_id`, `ancestors`) rather than one $or, which the embedded server scans.
    found = [doc["_id"] async for doc in ctx.db["orgs"].find({"_id": {"$in": tops}}, {"_id": 1})]
    below = ctx.db["orgs"].find({"ancestors": {"$in": tops}}, {"_id": 1})
    return list(dict.fromkeys([*found, *[doc["_id"] async for doc in below]]))


async def describe(ctx, org_ids: list[ObjectId]) -> list[Org]:
    """These organisations, the tree's top first, then by name."""
    if not org_ids:
        return []
    docs = await ctx.db["orgs"].find({"_id": {"$in": org_ids}}).to_list(None)
    docs.sort(key=lambda d: (len(d.get("ancestors", [])), d["name"]))
    return [_org_out(d) for d in docs]
