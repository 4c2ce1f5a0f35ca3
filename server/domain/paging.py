"""Opaque cursors for list endpoints: what the next page starts after, base64url-encoded."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from server.domain.errors import InvalidRequest
from server.domain.ids import parse_id

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidRequest("cursor 无效", field="cursor") from None
    if not isinstance(position, dict):
        raise InvalidRequest("cursor 无效", field="cursor")
    return position


async def page_by_id(
    collection,
    query: dict,
    cursor: str | None,
    limit: int,
    *,
    newest_first: bool = False,
    projection: dict | None = None,
) -> tuple[list[dict], str | None]:
    """One page of the documents matching `query` in `_id` order (oldest first unless asked),
    and the cursor of the next page (None on the last)."""
    if position := decode_cursor(cursor):
        after = parse_id(position.get("i"), "cursor")
        query = {**query, "_id": {"$lt" if newest_first else "$gt": after}}
    order = -1 if newest_first else 1
    docs = await collection.find(query, projection).sort([("_id", order)]).to_list(limit + 1)
    more = len(docs) > limit
    return docs[:limit], encode_cursor({"i": str(docs[limit - 1]["_id"])}) if more else None
