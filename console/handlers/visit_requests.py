"""走访申请: the visit requests of the caller's scope (their organisations', and the sites they
administer), by county, state and the dates they may be visited, with cursor paging through htmx.

The domain has no decline or cancel of a request yet (a request is open, scheduling or
scheduled), so the page only lists them.
"""

from __future__ import annotations

from datetime import date

from console.handlers.staff import StaffPage
from server.domain import access, caravans, orgs, sites
from server.domain.errors import InvalidRequest
from server.domain.ids import parse_id

READ = "visit.read"
PAGE_SIZE = 50
STATUS_NAMES = {"open": "待排期", "scheduling": "发布中", "scheduled": "已排期"}


def _day(value: str | None, field: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        raise InvalidRequest("日期格式不正确", field=field) from None


class VisitRequestsPage(StaffPage):
    nav = "visit_requests"

    async def get(self) -> None:
        org_id = self.arg("org_id")
        status = self.arg("status") if self.arg("status") in STATUS_NAMES else None
        scope = await self.scope(READ, org_id)
        site_ids = [] if org_id else await access.site_scope(self.ctx, self.staff_id, READ)
        result = await caravans.list_requests(
            self.ctx,
            scope,
            site_ids=site_ids,
            status=status,
            start=_day(self.arg("from"), "from"),
            end=_day(self.arg("to"), "to"),
            cursor=self.arg("cursor"),
            limit=PAGE_SIZE,
        )
        site_names = await sites.briefs(self.ctx, [parse_id(r.site_id) for r in result.items])
        everyone = await orgs.describe(self.ctx, await self.scope(READ))
        filters = {
            "from": self.arg("from") or "",
            "to": self.arg("to") or "",
            "status": status or "",
            "org_id": org_id or "",
        }
        self.render(
            "requests_list.html" if self.is_fragment() else "requests.html",
            result=result,
            filters=filters,
            statuses=STATUS_NAMES,
            orgs=everyone,
            org_names={o.id: o.name for o in everyone},
            site_names={str(k): v["name"] for k, v in site_names.items()},
        )


ROUTES = [
    (r"/console/visit-requests", VisitRequestsPage),
]
