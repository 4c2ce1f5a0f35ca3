"""服务时长: the pending hours of the caller's sites and activities, grouped by activity (the
longest waiting first), confirmed in one action through `hours.confirm` (the same call as
`POST /api/v1/hours/confirm`); the volunteers' open disputes to resolve; the adjustments above
the bound waiting for a second approver; and each record's history with an adjustment form.
Each action calls the domain function its API endpoint calls, under the same permission."""

from __future__ import annotations

from console.handlers.staff import StaffPage, parse_form
from server.domain import access, adjustments, disputes, hours, pending_hours
from server.domain.errors import DomainError, Forbidden, InvalidRequest
from server.web import ID
from server.web.base import STATUS_OF_KIND

CONFIRM, READ = "hours.confirm", "hours.read"
MAX_CONFIRM = 1000  # as the API's ConfirmRequest
LISTED = 50  # disputes and adjustment requests shown; the oldest first
ACTIONS = {
    "created": "记入",
    "confirmed": "确认",
    "adjusted": "更正",
    "reversed": "撤销",
    "disputed": "提出异议",
    "resolved": "处理异议",
    "adjustment_requested": "申请超限更正",
    "adjustment_approved": "批准更正",
    "adjustment_rejected": "驳回更正",
}
OUTCOMES = {"upheld": "采纳", "rejected": "驳回"}


class HoursPage(StaffPage):
    nav = "hours"

    async def get(self) -> None:
        await self.show()

    async def show(self, error: DomainError | None = None) -> None:
        await self.require_anywhere(CONFIRM)
        open_disputes = await disputes.list_disputes(
            self.ctx,
            org_ids=await access.scope(self.ctx, self.staff_id, READ),
            site_ids=await access.site_scope(self.ctx, self.staff_id, READ),
            status="open",
            cursor=None,
            limit=LISTED,
        )
        requests = await adjustments.list_requests(
            self.ctx,
            org_ids=await access.scope(self.ctx, self.staff_id, CONFIRM),
            site_ids=await access.site_scope(self.ctx, self.staff_id, CONFIRM),
            status="pending",
            cursor=None,
            limit=LISTED,
        )
        self.set_status(STATUS_OF_KIND[error.kind] if error else 200)
        self.render(
            "hours.html",
            q=await pending_hours.queue(self.ctx, self.staff_id),
            disputes=open_disputes.items,
            requests=requests.items,
            me=str(self.staff_id),
            done=self.get_query_argument("done", ""),
            confirmed=self.get_query_argument("confirmed", ""),
            error=error,
        )

    async def act(self, action) -> None:
        """Run an action; a refusal other than 403 is shown above the page."""
        await self.require_anywhere(CONFIRM)
        try:
            done = await action()
        except Forbidden:
            raise
        except DomainError as exc:
            await self.show(exc)
            return
        self.redirect(f"/console/hours?{done}")


class ConfirmPage(HoursPage):
    async def post(self) -> None:
        """The selected records, all or none: one outside the caller's scope refuses them all."""
        record_ids = self.get_body_arguments("record_ids")

        async def confirm() -> str:
            if not record_ids:
                raise InvalidRequest("请先选择要确认的记录", field="record_ids")
            if len(record_ids) > MAX_CONFIRM:
                raise InvalidRequest(f"一次最多确认 {MAX_CONFIRM} 条", field="record_ids")
            count = await hours.confirm(self.ctx, self.staff_id, record_ids)
            return f"confirmed={count}"

        await self.act(confirm)


class ResolveDisputePage(HoursPage):
    async def post(self, dispute_id: str) -> None:
        async def resolve() -> str:
            values = {k: self.arg(k) for k in ("outcome", "reason", "hours")}
            if values["outcome"] != "upheld":
                values.pop("hours")  # only an upheld dispute changes the record
            resolution = parse_form(
                disputes.Resolution, {k: v for k, v in values.items() if v is not None}
            )
            out = await disputes.resolve(self.ctx, self.staff_id, dispute_id, resolution)
            return "done=awaiting" if out.adjustment_id else f"done={out.outcome}"

        await self.act(resolve)


class ApprovePage(HoursPage):
    async def post(self, adjustment_id: str) -> None:
        async def approve() -> str:
            await adjustments.approve(self.ctx, self.staff_id, adjustment_id)
            return "done=approved"

        await self.act(approve)


class RejectPage(HoursPage):
    async def post(self, adjustment_id: str) -> None:
        async def reject() -> str:
            rejection = parse_form(adjustments.Rejection, {"reason": self.arg("reason") or ""})
            await adjustments.reject(self.ctx, self.staff_id, adjustment_id, rejection)
            return "done=rejected"

        await self.act(reject)


class RecordPage(StaffPage):
    """One record's history, oldest first, and a correction with its reason."""

    nav = "hours"

    async def get(self, record_id: str) -> None:
        await self.show(record_id)

    async def show(self, record_id: str, error: DomainError | None = None) -> None:
        await self.require_anywhere(READ)
        history = await disputes.staff_history(self.ctx, self.staff_id, record_id)
        self.set_status(STATUS_OF_KIND[error.kind] if error else 200)
        self.render(
            "hours_record.html",
            h=history,
            actions=ACTIONS,
            outcomes=OUTCOMES,
            done=self.get_query_argument("done", ""),
            error=error,
        )

    async def post(self, record_id: str) -> None:
        """Within the bound the record changes at once; above it, a request waits for another."""
        await self.require_anywhere(CONFIRM)
        try:
            change = parse_form(
                hours.Adjustment, {"hours": self.arg("hours"), "reason": self.arg("reason")}
            )
            record = await adjustments.adjust(self.ctx, self.staff_id, record_id, change)
        except Forbidden:
            raise
        except DomainError as exc:
            await self.show(record_id, exc)
            return
        done = "awaiting" if record.pending_adjustment_id else "adjusted"
        self.redirect(f"/console/hours/records/{record_id}?done={done}")


ROUTES = [
    (r"/console/hours", HoursPage),
    (r"/console/hours/confirm", ConfirmPage),
    (rf"/console/hours/disputes/(?P<dispute_id>{ID})/resolve", ResolveDisputePage),
    (rf"/console/hours/adjustments/(?P<adjustment_id>{ID})/approve", ApprovePage),
    (rf"/console/hours/adjustments/(?P<adjustment_id>{ID})/reject", RejectPage),
    (rf"/console/hours/records/(?P<record_id>{ID})", RecordPage),
]
