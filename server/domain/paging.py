"""Opaque cursors for list endpoints: what the next page starts after, base64url-encoded."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from server.domain.errors import InvalidRequest

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
