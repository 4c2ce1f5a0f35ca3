"""i科普 projects: the programmes activities belong to (a province runs some hundred).

Owns the `projects` collection.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from bson import ObjectId

from server.domain import orgs
from server.domain.errors import NotFound
from server.domain.ids import parse_id


class NewProject(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    org_id: str
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""


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
    return doc["_id"]


async def get_doc(ctx, project_id: ObjectId) -> dict:
    project = await ctx.db["projects"].find_one({"_id": project_id}, {"org_id": 1})
    if project is None:
        raise NotFound("项目不存在", field="project_id")
    return project


async def count_projects(ctx, org_ids: set[ObjectId], created_before: datetime) -> int:
    # A province has some hundred projects: reading them beats a long $in.
    cursor = ctx.db["projects"].find({"created_at": {"$lt": created_before}}, {"org_id": 1})
    return sum([1 async for doc in cursor if doc["org_id"] in org_ids])


async def project_briefs(ctx, project_ids: list[ObjectId]) -> dict[ObjectId, dict]:
    """Name and organisation of each project, for reports."""
    cursor = ctx.db["projects"].find({"_id": {"$in": project_ids}}, {"name": 1, "org_id": 1})
    return {doc.pop("_id"): doc async for doc in cursor}
