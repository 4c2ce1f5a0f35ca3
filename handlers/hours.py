"""Staff side of attendance and hours: check-in codes, the site's pending hours, confirmation
in bulk, adjustments and their second approval, disputes, a record's history; and the public
pages: check-in code images and certificate verification."""

from __future__ import annotations

from html import escape
from typing import Annotated, Literal

import msgspec

from server.clock import SHANGHAI
from server.domain import adjustments, attendance, certificates, disputes, hours, sites
from server.domain.errors import Conflict, DomainError
from server.web import ID, BaseHandler, operation


class SiteHoursQuery(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["pending", "confirmed"] | None = None
    cursor: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


class ConfirmRequest(msgspec.Struct, forbid_unknown_fields=True):
    record_ids: Annotated[list[str], msgspec.Meta(min_length=1, max_length=1000)]


class Confirmed(msgspec.Struct):
    confirmed: int


class AdjustmentsQuery(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["pending", "approved", "rejected"] = "pending"
    org_id: str | None = None
    cursor: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20


class DisputesQuery(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["open", "resolved"] = "open"
    org_id: str | None = None
    cursor: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20


class CheckinCodeHandler(BaseHandler):
    @operation(
        "A signed, expiring check-in code for the activity (its organisers and site admins)",
        response=attendance.CheckinCode,
        errors=(403, 404),
        permission="checkin.show",
    )
    async def get(self, activity_id: str) -> None:
        self.reply(await attendance.checkin_code(self.ctx, activity_id, by=self.user_id))


class SiteHoursHandler(BaseHandler):
    @operation(
        "Hours records served at a site (its admins and the organisers see them)",
        query=SiteHoursQuery,
        response=hours.HoursPage,
        errors=(403, 404),
        permission="hours.read",
    )
    async def get(self, site_id: str) -> None:
        await self.authorize(site=await sites.get_site_doc(self.ctx, site_id))
        q = self.query
        self.reply(await hours.site_records(self.ctx, site_id, q.status, q.cursor, q.limit))


class ConfirmHandler(BaseHandler):
    @operation(
        "Confirm pending hours in bulk (site admin of their sites, or the organiser)",
        body=ConfirmRequest,
        response=Confirmed,
        errors=(403, 404),
        idempotent=True,
        permission="hours.confirm",
    )
    async def post(self) -> None:
        count = await hours.confirm(self.ctx, self.user_id, self.body.record_ids)
        self.reply(Confirmed(confirmed=count))


class AdjustHandler(BaseHandler):
    @operation(
        "Correct a record: a new ledger entry with a reason; the record itself stays. Up to the "
        "activity's length it is made at once; above it, 409 `needs_approval` with the record "
        "unchanged: the request waits in GET /api/v1/hours/adjustments for another staff member "
        "(asked again, it is the same request; another while it waits: 409 `adjustment_pending`)",
        body=hours.Adjustment,
        response=hours.HoursRecord,
        errors=(403, 404, 409),
        idempotent=True,
        permission="hours.confirm",
    )
    async def post(self, record_id: str) -> None:
        record = await adjustments.adjust(self.ctx, self.user_id, record_id, self.body)
        if record.pending_adjustment_id:
            raise Conflict(
                "超出活动时长，更正已提交，须由另一名工作人员批准后生效",
                code="needs_approval",
                field="hours",
            )
        self.reply(record)


class AdjustmentsHandler(BaseHandler):
    @operation(
        "Adjustment requests above the bound (the second approver's queue), in the caller's scope",
        query=AdjustmentsQuery,
        response=adjustments.AdjustmentPage,
        errors=(403,),
        permission="hours.confirm",
    )
    async def get(self) -> None:
        q = self.query
        org_ids, site_ids = await self.scopes(q.org_id)
        page = await adjustments.list_requests(
            self.ctx,
            org_ids=org_ids,
            site_ids=site_ids,
            status=q.status, cursor=q.cursor, limit=q.limit,
        )  # fmt: skip
        self.reply(page)


class ApproveAdjustmentHandler(BaseHandler):
    @operation(
        "Approve an adjustment request: the correction is made (not by the one who asked)",
        response=hours.HoursRecord,
        errors=(403, 404, 409),
        idempotent=True,
        permission="hours.confirm",
    )
    async def post(self, adjustment_id: str) -> None:
        self.reply(await adjustments.approve(self.ctx, self.user_id, adjustment_id))


class RejectAdjustmentHandler(BaseHandler):
    @operation(
        "Reject an adjustment request, with a reason; the record stays as it is",
        body=adjustments.Rejection,
        response=adjustments.AdjustmentOut,
        errors=(403, 404, 409),
        idempotent=True,
        permission="hours.confirm",
    )
    async def post(self, adjustment_id: str) -> None:
        self.reply(await adjustments.reject(self.ctx, self.user_id, adjustment_id, self.body))


class DisputesHandler(BaseHandler):
    @operation(
        "Volunteers' disputes of records in the caller's scope, oldest first",
        query=DisputesQuery,
        response=disputes.DisputePage,
        errors=(403,),
        permission="hours.read",
    )
    async def get(self) -> None:
        q = self.query
        org_ids, site_ids = await self.scopes(q.org_id)
        page = await disputes.list_disputes(
            self.ctx,
            org_ids=org_ids,
            site_ids=site_ids,
            status=q.status, cursor=q.cursor, limit=q.limit,
        )  # fmt: skip
        self.reply(page)


class ResolveDisputeHandler(BaseHandler):
    @operation(
        "Resolve a dispute: upheld with the corrected hours (a bounded adjustment), or rejected "
        "with a reason; the volunteer is told",
        body=disputes.Resolution,
        response=disputes.DisputeOut,
        errors=(403, 404, 409),
        idempotent=True,
        permission="hours.confirm",
    )
    async def post(self, dispute_id: str) -> None:
        self.reply(await disputes.resolve(self.ctx, self.user_id, dispute_id, self.body))


class HistoryHandler(BaseHandler):
    @operation(
        "A record's changes, oldest first: who, when, what and why",
        response=disputes.History,
        errors=(403, 404),
        permission="hours.read",
    )
    async def get(self, record_id: str) -> None:
        self.reply(await disputes.staff_history(self.ctx, self.user_id, record_id))


class CheckinCodeImageHandler(BaseHandler):
    @operation(
        "The check-in code as an image (public: the scene is signed and expires)",
        auth=False,
        content_type="image/png",
        errors=(400,),
    )
    async def get(self, scene: str) -> None:
        png = await attendance.checkin_code_png(self.ctx, scene)
        self.set_header("Cache-Control", "private, max-age=300")
        self.send_file(png, "image/png")


class VerifyHandler(BaseHandler):
    """JSON for programs (`Accept: application/json`, or none); a small page for a browser,
    which is what the certificate's QR code opens."""

    @operation(
        "Check a 志愿服务记录证明 by its code (public): whose record (masked name), hours, "
        "issuer, date, and whether it is still valid (a reissued certificate supersedes it). "
        "A browser (Accept: text/html) gets the same as a page",
        response=certificates.Verification,
        content_types=("text/html",),
        auth=False,
        errors=(404,),
    )
    async def get(self, code: str) -> None:
        verification = await certificates.verify(self.ctx, code)
        if self._wants_html():
            self._send(200, _verification_page(verification).encode(), "text/html")
        else:
            self.reply(verification)

    def _wants_html(self) -> bool:
        accept = self.request.headers.get("Accept", "")
        return "text/html" in accept and "application/json" not in accept

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if self._wants_html() and isinstance(exc, DomainError):
            self._send(status_code, _page("证明查验失败", f"<p>{escape(exc.message)}</p>").encode(),
                       "text/html")  # fmt: skip
            return
        super().write_error(status_code, **kwargs)


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>body{{font-family:sans-serif;max-width:32em;"
        "margin:2em auto;padding:0 1em;line-height:1.6}.bad{color:#b00}.ok{color:#070}"
        f"dt{{color:#666}}dd{{margin:0 0 .6em}}</style></head><body><h1>{escape(title)}</h1>"
        f"{body}</body></html>"
    )


def _verification_page(v: certificates.Verification) -> str:
    if v.valid:
        state = '<p class="ok">此证明有效。</p>'
    else:
        when = v.superseded_at.astimezone(SHANGHAI).strftime("%Y-%m-%d")
        state = f'<p class="bad">此证明已于 {when} 被重新出具的证明取代，不再有效。</p>'
    issued = v.issued_at.astimezone(SHANGHAI).strftime("%Y年%m月%d日")
    items = [
        ("志愿者", v.volunteer),
        ("志愿服务时长", f"{v.confirmed_hours:g} 小时（{v.records} 条记录）"),
        ("出具单位", v.issuer),
        ("出具日期", issued),
        ("证明编号", v.code),
    ]
    listed = "".join(f"<dt>{escape(k)}</dt><dd>{escape(val)}</dd>" for k, val in items)
    return _page("志愿服务记录证明查验", f"{state}<dl>{listed}</dl>")


ROUTES = [
    (rf"/api/v1/activities/(?P<activity_id>{ID})/checkin-code", CheckinCodeHandler),
    (rf"/api/v1/sites/(?P<site_id>{ID})/hours", SiteHoursHandler),
    (r"/api/v1/hours/confirm", ConfirmHandler),
    (rf"/api/v1/hours/(?P<record_id>{ID})/adjust", AdjustHandler),
    (rf"/api/v1/hours/(?P<record_id>{ID})/history", HistoryHandler),
    (r"/api/v1/hours/adjustments", AdjustmentsHandler),
    (rf"/api/v1/hours/adjustments/(?P<adjustment_id>{ID})/approve", ApproveAdjustmentHandler),
    (rf"/api/v1/hours/adjustments/(?P<adjustment_id>{ID})/reject", RejectAdjustmentHandler),
    (r"/api/v1/hours/disputes", DisputesHandler),
    (rf"/api/v1/hours/disputes/(?P<dispute_id>{ID})/resolve", ResolveDisputeHandler),
    (r"/checkin-codes/(?P<scene>[A-Za-z0-9_=-]{32})\.png", CheckinCodeImageHandler),
    (r"/verify/(?P<code>[A-Za-z2-7]{1,64})", VerifyHandler),
]
