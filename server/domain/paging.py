"""Opaque cursors for list endpoints: what the next page starts after, base64url-encoded.

A cursor is read only through `decode_cursor`, against the Struct that declares its kind's
shape (strict types, no unknown keys, bounded numbers, ObjectIds checked by `parse_id`).
Anything else a client sends is a 400 naming the field, so a forged cursor never reaches a
query: what goes into one is always a typed value, never an operator object.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, TypeVar

import msgspec
from bson import ObjectId

from server.domain.errors import InvalidRequest
from server.domain.ids import parse_id

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_CURSOR_LENGTH = 512
"""Longer than any cursor this service issues: a longer one is refused unread."""

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
Position = TypeVar("Position", bound=msgspec.Struct)


class IdCursor(msgspec.Struct, forbid_unknown_fields=True):
    """After (or, newest first, before) the document with this `_id`: `page_by_id`'s cursor."""

    i: ObjectId


def _enc_hook(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return str(value)
    raise TypeError(f"a cursor holds ids, numbers and times, not {type(value).__name__}")


def _dec_hook(kind: type, value: Any) -> Any:
    # ObjectId(None) would make a fresh id: only strings are ids here.
    if kind is ObjectId and isinstance(value, str):
        return parse_id(value, "cursor")
    raise TypeError(f"Expected `{kind.__name__}`")  # msgspec reports it as a ValidationError


_ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook)


def encode_cursor(position: msgspec.Struct) -> str:
    return base64.urlsafe_b64encode(_ENCODER.encode(position)).rstrip(b"=").decode()


def decode_cursor(cursor: str | None, schema: type[Position]) -> Position | None:
    """The position a cursor holds, decoded as `schema`; None without a cursor. Raises
    InvalidRequest (field "cursor") for anything this service would not have issued."""
    if not cursor:
        return None
    invalid = InvalidRequest("cursor 无效", field="cursor")
    if len(cursor) > MAX_CURSOR_LENGTH or not _BASE64URL.fullmatch(cursor):
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=schema, dec_hook=_dec_hook)
    except (binascii.Error, msgspec.DecodeError, InvalidRequest):
        raise invalid from None


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
    if position := decode_cursor(cursor, IdCursor):
        query = {**query, "_id": {"$lt" if newest_first else "$gt": position.i}}
    order = -1 if newest_first else 1
    # The limit goes to the server: without it the first batch holds up to 101 documents,
    # however few the page shows.
    found = collection.find(query, projection).sort([("_id", order)]).limit(limit + 1)
    docs = await found.to_list(None)
    more = len(docs) > limit
    return docs[:limit], encode_cursor(IdCursor(i=docs[limit - 1]["_id"])) if more else None


async def page_by_id_any(
    collection, queries: list[dict], cursor: str | None, limit: int, *, newest_first: bool = False
) -> tuple[list[dict], str | None]:
    """`page_by_id` over documents matching any of `queries`: each runs on its own index (an
    `$or` would scan on the embedded server) and the pages merge in `_id` order."""
    found: dict = {}
    more = False
    for query in queries:
        docs, following = await page_by_id(
            collection, query, cursor, limit, newest_first=newest_first
        )
        more = more or following is not None
        found.update((d["_id"], d) for d in docs)
    merged = sorted(found.values(), key=lambda d: d["_id"], reverse=newest_first)
    more = more or len(merged) > limit
    return merged[:limit], encode_cursor(IdCursor(i=merged[limit - 1]["_id"])) if more else None
