"""A site admin's day from the phone: a school clerk has the mini-program, not a desk. The sites
they administer, the hours waiting there, confirming them in bulk, the caravan visits to confirm
and the visit requests, through the same domain functions and permission table as /api/v1."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from server.domain import attendance, caravans, hours, sites
from server.web import ID, BaseHandler, operation


class AdministeredSites(msgspec.Struct):
    items: list[sites.SiteBrief]


class SiteHoursFilter(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["pending", "confirmed"] | None = None
    cursor: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


class SiteConfirmRequest(msgspec.Struct, forbid_unknown_fields=True):
    record_ids: Annotated[list[str], msgspec.Meta(min_length=1, max_length=1000)]


class SiteConfirmed(msgspec.Struct):
    confirmed: int


class SitePageQuery(msgspec.Struct, forbid_unknown_fields=True):
    cursor: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20


class SiteVisitQuery(SitePageQuery, forbid_unknown_fields=True):
    confirmed: bool | None = None


class MySitesHandler(BaseHandler):
    @operation("The sites I administer", response=AdministeredSites)
    async def get(self) -> None:
        self.reply(AdministeredSites(items=await sites.administered_by(self.ctx, self.user_id)))


class SiteHandler(BaseHandler):
    async def site(self, site_id: str) -> dict:
        site = await sites.get_site_doc(self.ctx, site_id)
        await self.authorize(site=site)
        return site


class SiteHoursHandler(SiteHandler):
    @operation(
        "Hours served at my site, pending first to confirm",
        query=SiteHoursFilter,
        response=hours.HoursPage,
        errors=(403, 404),
        permission="hours.read",
    )
    async def get(self, site_id: str) -> None:
        await self.site(site_id)
        q = self.query
        self.reply(await hours.site_records(self.ctx, site_id, q.status, q.cursor, q.limit))


class ConfirmHoursHandler(SiteHandler):
    @operation(
        "Confirm hours at my site in one action (a whole class's parents at once)",
        body=SiteConfirmRequest,
        response=SiteConfirmed,
        errors=(403, 404),
        idempotent=True,
        permission="hours.confirm",
    )
    async def post(self, site_id: str) -> None:
        await self.site(site_id)
        count = await hours.confirm(self.ctx, self.user_id, self.body.record_ids)
        self.reply(SiteConfirmed(confirmed=count))


class SiteVisitsHandler(SiteHandler):
    @operation(
        "Caravan visits logged at my site, to confirm with the people reached",
        query=SiteVisitQuery,
        response=caravans.SiteVisitPage,
        errors=(403, 404),
        permission="visit.confirm",
    )
    async def get(self, site_id: str) -> None:
        await self.site(site_id)
        q = self.query
        self.reply(
            await caravans.site_visits(
                self.ctx, site_id, confirmed=q.confirmed, cursor=q.cursor, limit=q.limit
            )
        )


class ConfirmVisitHandler(BaseHandler):
    @operation(
        "Confirm a caravan visit at my site: the people reached, the crew's hours",
        response=caravans.VisitConfirmed,
        errors=(403, 404, 409),
        idempotent=True,
        permission="visit.confirm",
    )
    async def post(self, trip_id: str, request_id: str) -> None:
        self.reply(await caravans.confirm_visit(self.ctx, trip_id, request_id, by=self.user_id))


class SiteRequestsHandler(SiteHandler):
    @operation(
        "My site's visit requests and their state",
        query=SitePageQuery,
        response=caravans.VisitRequestPage,
        errors=(403, 404),
        permission="visit.read",
    )
    async def get(self, site_id: str) -> None:
        site = await self.site(site_id)
        q = self.query
        self.reply(
            await caravans.list_requests(
                self.ctx, [site["org_id"]], site_id=site_id, cursor=q.cursor, limit=q.limit
            )
        )


class CheckinCodeHandler(BaseHandler):
    @operation(
        "The activity's check-in code, to show on my phone's screen",
        response=attendance.CheckinCode,
        errors=(403, 404),
        permission="checkin.show",
    )
    async def get(self, activity_id: str) -> None:
        self.reply(await attendance.checkin_code(self.ctx, activity_id, by=self.user_id))


_SITE = rf"/mp/v1/sites/(?P<site_id>{ID})"
ROUTES = [
    (r"/mp/v1/me/sites", MySitesHandler),
    (_SITE + r"/hours", SiteHoursHandler),
    (_SITE + r"/hours/confirm", ConfirmHoursHandler),
    (_SITE + r"/visits", SiteVisitsHandler),
    (_SITE + r"/visit-requests", SiteRequestsHandler),
    (rf"/mp/v1/activities/(?P<activity_id>{ID})/checkin-code", CheckinCodeHandler),
    (rf"/mp/v1/trips/(?P<trip_id>{ID})/visits/(?P<request_id>{ID})/confirm", ConfirmVisitHandler),
]
