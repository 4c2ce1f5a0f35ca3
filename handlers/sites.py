"""Sites (schools, villages, communities, bases) and their admins."""

from __future__ import annotations

import msgspec

from server.domain import identity, sites
from server.domain.ids import parse_id
from server.web import ID, BaseHandler, Created, operation


class NewSiteAdmin(msgspec.Struct, forbid_unknown_fields=True):
    user_id: str


class SitesHandler(BaseHandler):
    @operation(
        "Register a site",
        body=sites.NewSite,
        response=Created,
        status=201,
        errors=(403, 404),
        idempotent=True,
        permission="site.register",
    )
    async def post(self) -> None:
        await self.authorize(self.body.org_id)
        site_id = await sites.create_site(self.ctx, self.body, created_by=self.user_id)
        self.reply(Created(id=str(site_id)))


class SiteHandler(BaseHandler):
    @operation("A site", response=sites.Site, errors=(403, 404), permission="site.read")
    async def get(self, site_id: str) -> None:
        await self.authorize(site=await sites.get_site_doc(self.ctx, site_id))
        self.reply(await sites.get_site(self.ctx, site_id))


class SiteAdminsHandler(BaseHandler):
    @operation(
        "Make a user an admin of this site",
        body=NewSiteAdmin,
        response=sites.Site,
        errors=(403, 404),
        permission="site.appoint",
    )
    async def post(self, site_id: str) -> None:
        site = await sites.get_site_doc(self.ctx, site_id)
        await self.authorize(site["org_id"])
        user_id = parse_id(self.body.user_id, "user_id")
        await identity.get_user(self.ctx, user_id)
        await sites.add_admin(self.ctx, site["_id"], user_id, by=self.user_id)
        self.reply(await sites.get_site(self.ctx, site_id))


ROUTES = [
    (r"/api/v1/sites", SitesHandler),
    (rf"/api/v1/sites/(?P<site_id>{ID})", SiteHandler),
    (rf"/api/v1/sites/(?P<site_id>{ID})/admins", SiteAdminsHandler),
]
