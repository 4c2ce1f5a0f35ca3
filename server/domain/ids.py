"""Ids are ObjectIds in the database and strings in the API."""

from __future__ import annotations

from bson import ObjectId
from bson.errors import InvalidId

from server.domain.errors import InvalidRequest, NotFound


def parse_id(value, field: str = "id", *, missing_is_not_found: bool = False) -> ObjectId:
    if isinstance(value, ObjectId):
        return value
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        if missing_is_not_found:
            raise NotFound("资源不存在", field=field) from None
        raise InvalidRequest(f"{field} 不是有效的 id", field=field) from None


async def fetch(collection, value, field: str, missing: str, projection=None) -> dict:
    """The document with this id, or NotFound naming the field."""
    doc = await collection.find_one({"_id": parse_id(value, field)}, projection)
    if doc is None:
        raise NotFound(missing, field=field)
    return doc
