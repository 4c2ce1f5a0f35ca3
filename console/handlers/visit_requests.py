"""走访申请: the visit requests of the caller's scope (their organisations', and the sites they
administer), by county, state and the dates they may be visited, with cursor paging through htmx;
a dispatcher declines an open one with a reason, a site's admin cancels their own, and a county's
season comes in as the workbook of `caravans.request_template`, every row or none.

A scheduled request whose day has not passed is declined or cancelled the same way: its visit is
withdrawn (the domain cancels its activity and tells the crew, and refuses once a trip logged
it)."""

from __future__ import annotations

from datetime import date

from console.handlers.staff import StaffPage, parse_form
from server.domain import access, caravans, orgs, sites
from server.domain.errors import DomainError, Forbidden, InvalidRequest
from server.domain.ids import parse_id
from server.web import XLSX

READ = "visit.read"
DISPATCH = "plan.dispatch"
REQUEST = "visit.request"
PAGE_SIZE = 50
STATUS_NAMES = {
    "open": "待排期",
    "scheduling": "发布中",
    "scheduled": "已排期",
    "declined": "已拒绝",
    "cancelled": "已取消",
}
DONE = {
    "declined": "已拒绝该申请，站点管理员会收到通知；已排期的走访已撤回，随车志愿者会收到通知",
    "cancelled": "已取消该申请；已排期的走访已撤回，随车志愿者会收到通知",
}


def _day(value: str | None, field: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        raise InvalidRequest("日期格式不正确", field=field) from None


def _withdrawable(request: caravans.VisitRequestOut, today: str) -> bool:
    """Scheduled for a day still to come: its visit may be withdrawn (a past day's took place or
    was missed, which the domain refuses to withdraw)."""
    return request.status == "scheduled" and (request.date or "") >= today


class VisitRequestsPage(StaffPage):
    nav = "visit_requests"

    async def get(self) -> None:
        await self.show()

    async def show(self, error: DomainError | None = None) -> None:
        org_id = self.get_query_argument("org_id", "").strip() or None
        status = self.arg("status") if self.arg("status") in STATUS_NAMES else None
        scope = await self.scope(READ, org_id)
        site_ids = [] if org_id else await access.site_scope(self.ctx, self.staff_id, READ)
        result = await caravans.list_requests(
            self.ctx,
            scope,
            site_ids=site_ids,
            status=status,
            start=_day(self.get_query_argument("from", ""), "from"),
            end=_day(self.get_query_argument("to", ""), "to"),
            cursor=self.get_query_argument("cursor", "") or None,
            limit=PAGE_SIZE,
        )
        briefs = await sites.briefs(self.ctx, [parse_id(r.site_id) for r in result.items])
        everyone = await orgs.describe(self.ctx, await self.scope(READ))
        dispatching = await orgs.describe(
            self.ctx, await access.scope(self.ctx, self.staff_id, DISPATCH)
        )
        filters = {
            "from": self.get_query_argument("from", ""),
            "to": self.get_query_argument("to", ""),
            "status": status or "",
            "org_id": org_id or "",
        }
        done = self.get_query_argument("done", "")
        today = self.ctx.clock.local_now().date().isoformat()
        imported = self.get_query_argument("imported", "")
        self.set_status(400 if error else 200)
        self.render(
            "requests_list.html" if self.is_fragment() else "requests.html",
            result=result,
            filters=filters,
            statuses=STATUS_NAMES,
            orgs=everyone,
            dispatch_orgs=dispatching,
            dispatch_ids={o.id for o in dispatching},
            cancellable=await self._cancellable(result.items, briefs, today),
            withdrawable={r.id for r in result.items if _withdrawable(r, today)},
            org_names={o.id: o.name for o in everyone},
            site_names={str(k): v["name"] for k, v in briefs.items()},
            error=error,
            notice=f"已导入 {imported} 条申请" if imported else DONE.get(done, ""),
        )

    async def _cancellable(self, items: list, briefs: dict, today: str) -> set[str]:
        """The open (or still to come, scheduled) requests whose site this caller may ask (and
        so cancel) for."""
        ids = set()
        for r in items:
            brief = briefs.get(parse_id(r.site_id))
            if (r.status == "open" or _withdrawable(r, today)) and brief is not None:
                site = {"_id": parse_id(r.site_id), "org_id": brief["org_id"]}
                if await self.may(REQUEST, site=site):
                    ids.add(r.id)
        return ids


class DeclineRequest(VisitRequestsPage):
    async def post(self, request_id: str) -> None:
        request = await caravans.get_request_doc(self.ctx, request_id)
        await self.require(DISPATCH, request["org_id"])
        try:
            reason = parse_form(caravans.Decline, {"reason": self.arg("reason") or ""}).reason
            await caravans.decline(self.ctx, request["_id"], reason, by=self.staff_id)
        except Forbidden:
            raise
        except DomainError as exc:
            await self.show(exc)
            return
        self.redirect("/console/visit-requests?done=declined")


class CancelRequest(VisitRequestsPage):
    async def post(self, request_id: str) -> None:
        request = await caravans.get_request_doc(self.ctx, request_id)
        await self.require(REQUEST, site=await sites.get_site_doc(self.ctx, request["site_id"]))
        try:
            await caravans.cancel(self.ctx, request["_id"], by=self.staff_id)
        except DomainError as exc:
            await self.show(exc)
            return
        self.redirect("/console/visit-requests?done=cancelled")


class ImportRequests(VisitRequestsPage):
    async def post(self) -> None:
        try:
            org_id = parse_id(self.arg("import_org_id"), "import_org_id")
            await self.require(DISPATCH, org_id)
            files = self.request.files.get("file")
            if not files:
                raise InvalidRequest("请选择要导入的 xlsx 文件", field="file")
            done = await caravans.import_requests(
                self.ctx, org_id, files[0]["body"], created_by=self.staff_id
            )
        except Forbidden:
            raise
        except DomainError as exc:
            await self.show(exc)
            return
        self.redirect(f"/console/visit-requests?imported={done.imported}")


class RequestTemplate(StaffPage):
    async def get(self) -> None:
        org_id = parse_id(self.arg("org_id"), "org_id")
        await self.require(DISPATCH, org_id)
        body = await caravans.request_template(self.ctx, org_id)
        self.set_header("Content-Type", XLSX)
        name = "visit-requests-template.xlsx"
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(body)


_R = r"/console/visit-requests/(?P<request_id>[0-9a-f]{24})"
ROUTES = [
    (r"/console/visit-requests", VisitRequestsPage),
    (r"/console/visit-requests/import", ImportRequests),
    (r"/console/visit-requests/template\.xlsx", RequestTemplate),
    (_R + "/decline", DeclineRequest),
    (_R + "/cancel", CancelRequest),
]
