"""i科普 projects: the programmes activities belong to (a province runs some hundred).

Owns the `projects` and `projects_version` collections.

Few, and read by every report (their count and names), so each process holds them
(`ctx.projects`, a server.db.snapshots.Snapshot): a project created in this process is held at
once, one created in another at most a second later; one asked for by id that the snapshot
lacks is read from the database.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from bson import ObjectId

from server.db.snapshots import Snapshot
from server.domain import orgs
from server.domain.errors import NotFound
from server.domain.ids import parse_id
from server.domain.text import line, lines


class NewProject(msgspec.Struct, forbid_unknown_fields=True):
    name: line(100)
    org_id: str
    description: lines(2000, 0) = ""


async def create_project(ctx, new: NewProject, *, created_by: ObjectId | None) -> ObjectId:
    org_id = parse_id(new.org_id, "org_id")
    await orgs.get_org(ctx, org_id)
    doc = {
        "_id": ObjectId(),
        "name": new.name.strip(),
        "org_id": org_id,
        "description": new.description,
        "created_by": created_by,
        "created_at": ctx.clock.now(),
    }
    await ctx.db["projects"].insert_one(doc)
    held = ctx.projects.held
    await ctx.projects.changed(ctx, {**held, doc["_id"]: _brief(doc)} if held is not None else None)
    return doc["_id"]


class ProjectBrief(msgspec.Struct, frozen=True):
    name: str
    org_id: ObjectId
    created_at: datetime


_BRIEF = {"name": 1, "org_id": 1, "created_at": 1}


def _brief(doc: dict) -> ProjectBrief:
    return ProjectBrief(name=doc["name"], org_id=doc["org_id"], created_at=doc["created_at"])


async def _load(ctx) -> dict[ObjectId, ProjectBrief]:
    return {doc["_id"]: _brief(doc) async for doc in ctx.db["projects"].find({}, _BRIEF)}


def held_projects() -> Snapshot[dict[ObjectId, ProjectBrief]]:
    """The projects of this process (`ctx.projects`)."""
    return Snapshot("projects_version", "projects", _load)


async def get_doc(ctx, project_id: ObjectId) -> dict:
    project = await ctx.db["projects"].find_one({"_id": project_id}, {"org_id": 1})
    if project is None:
        raise NotFound("项目不存在", field="project_id")
    return project


async def count_projects(ctx, org_ids: set[ObjectId], created_before: datetime) -> int:
    held = await ctx.projects.value(ctx)
    return sum(1 for p in held.values() if p.org_id in org_ids and p.created_at < created_before)


async def project_briefs(ctx, project_ids: list[ObjectId]) -> dict[ObjectId, dict]:
    """Name and organisation of each project, for reports."""
    held = await ctx.projects.value(ctx)
    found = {p: {"name": held[p].name, "org_id": held[p].org_id} for p in project_ids if p in held}
    missing = [p for p in project_ids if p not in found]
    if missing:  # created a moment ago in another process
        cursor = ctx.db["projects"].find({"_id": {"$in": missing}}, {"name": 1, "org_id": 1})
        found |= {doc.pop("_id"): doc async for doc in cursor}
    return found
