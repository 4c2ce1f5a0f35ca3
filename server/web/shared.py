"""Pieces every HTTP module uses: the id path pattern, the answer to a create, file types, and
the query of a paged list."""

from __future__ import annotations

from typing import Annotated

import msgspec

from server.domain.paging import DEFAULT_LIMIT, MAX_LIMIT

ID = "[0-9a-f]{24}"
"""An ObjectId in a path; a route names it, e.g. rf"/api/v1/sites/(?P<site_id>{ID})"."""

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class Created(msgspec.Struct):
    id: str


class ListQuery(msgspec.Struct, forbid_unknown_fields=True):
    """`org_id`: only that organisation's subtree (the caller must hold the operation's
    permission there or above); without it, every organisation the caller may see."""

    org_id: str | None = None
    cursor: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
