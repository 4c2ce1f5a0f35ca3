"""Volunteers' attendance and hours: check in and out on site, my hours, disputes, certificate."""

from __future__ import annotations

import msgspec

from server.domain import attendance, certificates, disputes, hours
from server.domain.text import lines
from server.web import ID, BaseHandler, operation


class DisputeRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: lines(500, 2)


class Disputed(msgspec.Struct):
    status: str


class CheckinHandler(BaseHandler):
    @operation(
        "Check in on site with the phone's location (and the scanned code)",
        body=attendance.CheckinRequest,
        response=attendance.CheckedIn,
        errors=(404, 409, 422),
        idempotent=True,
    )
    async def post(self, activity_id: str) -> None:
        self.reply(await attendance.check_in(self.ctx, self.user_id, activity_id, self.body))


class CheckoutHandler(BaseHandler):
    @operation(
        "Check out: the hours served become a pending record for the site to confirm",
        body=attendance.CheckoutRequest,
        response=attendance.CheckedOut,
        errors=(404, 409, 422),
        idempotent=True,
    )
    async def post(self, activity_id: str) -> None:
        self.reply(await attendance.check_out(self.ctx, self.user_id, activity_id, self.body))


class MyHoursHandler(BaseHandler):
    @operation(
        "My confirmed and pending hours, star level and records (each with its activity's title "
        "and its latest dispute: status, outcome, the answer)",
        response=hours.MyHours,
    )
    async def get(self) -> None:
        self.reply(await disputes.my_hours(self.ctx, self.user_id))


class MyRecordHistoryHandler(BaseHandler):
    @operation(
        "One of my records' changes, oldest first: who, when, what and why",
        response=disputes.History,
        errors=(404,),
    )
    async def get(self, record_id: str) -> None:
        self.reply(await disputes.my_history(self.ctx, self.user_id, record_id))


class DisputeHandler(BaseHandler):
    @operation(
        "Report an error in one of my records; the organiser is asked to check it",
        body=DisputeRequest,
        response=Disputed,
        status=201,
        errors=(404, 409),
    )
    async def post(self, record_id: str) -> None:
        await disputes.raise_dispute(self.ctx, self.user_id, record_id, self.body.reason)
        self.reply(Disputed(status="open"))


class CertificateHandler(BaseHandler):
    @operation("My 志愿服务记录证明 as a PDF", content_type="application/pdf", errors=(404,))
    async def get(self) -> None:
        pdf = await certificates.issue(self.ctx, self.user_id)
        self.send_file(pdf, "application/pdf", "certificate.pdf", inline=True)


ROUTES = [
    (rf"/mp/v1/activities/(?P<activity_id>{ID})/checkin", CheckinHandler),
    (rf"/mp/v1/activities/(?P<activity_id>{ID})/checkout", CheckoutHandler),
    (r"/mp/v1/me/hours", MyHoursHandler),
    (rf"/mp/v1/me/hours/(?P<record_id>{ID})/history", MyRecordHistoryHandler),
    (rf"/mp/v1/hours/(?P<record_id>{ID})/dispute", DisputeHandler),
    (r"/mp/v1/me/certificate", CertificateHandler),
]
