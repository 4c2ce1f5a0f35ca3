"""Sites (schools, villages, communities, bases) and their admins."""

from __future__ import annotations

import msgspec

from handlers.api import operation
from handlers.base import BaseHandler
from handlers.orgs import Created
from server.domain import identity, sites
from server.domain.ids import parse_id


class NewSiteAdmin(msgspec.Struct, forbid_unknown_fields=True):
    user_id: str


class SitesHandler(BaseHandler):
    @operation(
        "Register a site (org_admin or dispatcher of its organisation)",
        body=sites.NewSite,
        response=Created,
        status=201,
        errors=(403, 404),
        idempotent=True,
    )
    async def post(self) -> None:
        await self.authorize(self.body.org_id, "dispatcher")
        site_id = await sites.create_site(self.ctx, self.body, created_by=self.user_id)
        self.reply(Created(id=str(site_id)))


class SiteHandler(BaseHandler):
    @operation("A site", response=sites.Site, errors=(403, 404))
    async def get(self, site_id: str) -> None:
        site = await sites.get_site(self.ctx, site_id)
        await self.authorize(site.org_id, "dispatcher", "site_admin", "team_leader")
        self.reply(site)


class SiteAdminsHandler(BaseHandler):
    @operation(
        "Make a user an admin of this site (org_admin of its organisation)",
        body=NewSiteAdmin,
        response=sites.Site,
        errors=(403, 404),
    )
    async def post(self, site_id: str) -> None:
        site = await sites.get_site(self.ctx, site_id)
        await self.authorize(site.org_id, "org_admin")
        user_id = parse_id(self.body.user_id, "user_id")
        await identity.get_user(self.ctx, user_id)
        await sites.add_admin(self.ctx, parse_id(site_id), user_id)
        self.reply(await sites.get_site(self.ctx, site_id))


ROUTES = [
    (r"/api/v1/sites", SitesHandler),
    (r"/api/v1/sites/(?P<site_id>[0-9a-f]{24})", SiteHandler),
    (r"/api/v1/sites/(?P<site_id>[0-9a-f]{24})/admins", SiteAdminsHandler),
]
