"""Organisations as a tree: province → city → county, teams and bases under them. The roles
people hold in them are `access`'s.

Owns the `orgs` and `orgs_version` collections.

The tree in memory. Statistics read every organisation for each report (a province holds a few
thousand), so each process keeps them (`ctx.org_tree`, `nodes`): loaded on first use, then
reloaded whole when the version document (`{_id: "orgs", v}`, bumped after every organisation
created) has moved, which it checks at most once a CHECK_S. Staleness: none in the process that
created the organisation (it adds it at once); at most CHECK_S, plus a reload, in the others.
Organisations asked for by id that the tree lacks are read from the database, so only "every
organisation" can be that stale. Organisations never move or change once created.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from bson import ObjectId

from server.db.snapshots import Snapshot
from server.domain.errors import InvalidRequest, NotFound
from server.domain.ids import fetch

CHECK_S = 1.0
VERSIONS = "orgs_version"

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
    await ctx.org_tree.created(ctx, doc)
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


_FIELDS = {"name": 1, "kind": 1, "ancestors": 1, "created_at": 1}


def _node(doc: dict) -> OrgNode:
    return OrgNode(
        id=doc["_id"],
        name=doc["name"],
        kind=doc["kind"],
        lineage=(doc["_id"], *reversed(doc.get("ancestors", []))),
        created_at=doc.get("created_at"),
    )


class OrgTree:
    """Every organisation, held in this process (`ctx.org_tree`); see the module's docstring."""

    def __init__(self) -> None:
        self._held = Snapshot(VERSIONS, "orgs", _load_nodes, check_s=CHECK_S)
        self._subtrees: dict[ObjectId, tuple[OrgNode, ...]] = {}
        self._subtrees_of: dict | None = None  # the snapshot they were drawn from

    async def all(self, ctx) -> dict[ObjectId, OrgNode]:
        """Every organisation, at most CHECK_S behind other processes' creations. The mapping
        is a snapshot, replaced and never changed in place: read it, don't modify it."""
        return await self._held.value(ctx)

    async def subtree(self, ctx, org_id: ObjectId) -> tuple[OrgNode, ...]:
        """The organisation and all below it, by id; kept until the tree changes, since a
        province's report would otherwise walk every organisation's lineage each time."""
        held = await self.all(ctx)
        if self._subtrees_of is not held:
            self._subtrees, self._subtrees_of = {}, held
        if org_id not in self._subtrees:
            below = (n for n in held.values() if org_id in n.lineage)
            self._subtrees[org_id] = tuple(sorted(below, key=lambda n: str(n.id)))
        return self._subtrees[org_id]

    async def some(self, ctx, org_ids: list[ObjectId]) -> dict[ObjectId, OrgNode]:
        held = await self.all(ctx)
        found = {org: held[org] for org in org_ids if org in held}
        missing = [org for org in org_ids if org not in found]
        if missing:  # created a moment ago in another process
            read = ctx.db["orgs"].find({"_id": {"$in": missing}}, _FIELDS)
            found |= {doc["_id"]: _node(doc) async for doc in read}
        return found

    async def created(self, ctx, doc: dict) -> None:
        """An organisation was created in this process: held at once, announced to the rest."""
        held = self._held.held
        await self._held.changed(
            ctx, {**held, doc["_id"]: _node(doc)} if held is not None else None
        )


async def _load_nodes(ctx) -> dict[ObjectId, OrgNode]:
    found = ctx.db["orgs"].find({}, _FIELDS, batch_size=10_000)
    return {doc["_id"]: _node(doc) async for doc in found}


async def subtree_nodes(ctx, org_id: ObjectId) -> tuple[OrgNode, ...]:
    """An organisation and all below it, from the tree in memory, by id."""
    return await ctx.org_tree.subtree(ctx, org_id)


async def nodes(ctx, org_ids: list[ObjectId] | None = None) -> dict[ObjectId, OrgNode]:
    """Organisations by id (all of them when `org_ids` is None), from the tree in memory."""
    if org_ids is None:
        return await ctx.org_tree.all(ctx)
    return await ctx.org_tree.some(ctx, org_ids)


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
