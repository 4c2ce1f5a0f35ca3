"""The permission checks and form parsing the console's work pages share: the same table and
the same scope rules as the JSON API (server/web/base.py), for a caller signed in by cookie."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from console.handlers.base import ConsoleHandler
from server.clock import SHANGHAI
from server.domain import access, orgs
from server.domain.errors import Forbidden, InvalidRequest
from server.domain.ids import parse_id
from server.web.base import convert_text


class StaffPage(ConsoleHandler):
    async def holds(self, permission: str) -> bool:
        return await access.holds_anywhere(self.ctx, self.staff_id, permission)

    async def require_anywhere(self, permission: str) -> None:
        """What the API checks before calling the domain: the permission held somewhere."""
        if not await self.holds(permission):
            raise Forbidden("没有执行此操作的权限")

    async def require(self, permission: str, org_id=None, *, site: dict | None = None) -> None:
        await self.require_anywhere(permission)
        await access.require(self.ctx, self.staff_id, permission, org_id=org_id, site=site)

    async def may(self, permission: str, org_id=None, *, site: dict | None = None) -> bool:
        return await access.may(self.ctx, self.staff_id, permission, org_id=org_id, site=site)

    async def scope(self, permission: str, org_id: str | None = None) -> list:
        """As the API's list endpoints: one subtree when asked for, else every one held."""
        if org_id is None:
            await self.require_anywhere(permission)
            return await access.scope(self.ctx, self.staff_id, permission)
        await self.require(permission, org_id)
        return await orgs.subtree_ids(self.ctx, parse_id(org_id, "org_id"))

    def arg(self, name: str) -> str | None:
        """A query or form value, None when absent or blank."""
        value = self.get_argument(name, "").strip()
        return value or None

    def is_fragment(self) -> bool:
        """htmx asked for the part of the page it swaps, not the whole page."""
        return bool(self.request.headers.get("HX-Request"))


def parse_form(model: type, values: dict[str, Any]) -> Any:
    """A form's values as the API's request model, refused with the API's message and field."""
    return convert_text(values, model, "body")


def shanghai_time(value: str | None, field: str) -> datetime | None:
    """A datetime-local (or date) field, read as Asia/Shanghai time."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=SHANGHAI)
    except ValueError:
        raise InvalidRequest("时间格式不正确", field=field) from None
