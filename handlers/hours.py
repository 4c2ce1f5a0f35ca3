"""Staff side of attendance and hours: check-in codes, the site's pending hours, confirmation
in bulk, adjustments; and the public pages: check-in code images and certificate verification."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from server.domain import attendance, certificates, hours, sites
from server.web import ID, BaseHandler, operation


class SiteHoursQuery(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["pending", "confirmed"] | None = None
    cursor: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


class ConfirmRequest(msgspec.Struct, forbid_unknown_fields=True):
    record_ids: Annotated[list[str], msgspec.Meta(min_length=1, max_length=1000)]


class Confirmed(msgspec.Struct):
    confirmed: int


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
        "Correct a record: a new ledger entry with a reason; the record itself stays",
        body=hours.Adjustment,
        response=hours.HoursRecord,
        errors=(403, 404),
        idempotent=True,
        permission="hours.confirm",
    )
    async def post(self, record_id: str) -> None:
        self.reply(await hours.adjust(self.ctx, self.user_id, record_id, self.body))


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
    @operation(
        "Check a 志愿服务记录证明 by its code (public)",
        response=certificates.Verification,
        auth=False,
        errors=(404,),
    )
    async def get(self, code: str) -> None:
        self.reply(await certificates.verify(self.ctx, code))


ROUTES = [
    (rf"/api/v1/activities/(?P<activity_id>{ID})/checkin-code", CheckinCodeHandler),
    (rf"/api/v1/sites/(?P<site_id>{ID})/hours", SiteHoursHandler),
    (r"/api/v1/hours/confirm", ConfirmHandler),
    (rf"/api/v1/hours/(?P<record_id>{ID})/adjust", AdjustHandler),
    (r"/checkin-codes/(?P<scene>[A-Za-z0-9_=-]{32})\.png", CheckinCodeImageHandler),
    (r"/verify/(?P<code>[A-Za-z2-7]{1,64})", VerifyHandler),
]
