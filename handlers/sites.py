"""Sites (schools, villages, communities, bases) and their admins."""

from __future__ import annotations

import msgspec

from server.domain import identity, sites
from server.domain.ids import parse_id
from server.domain.text import line
from server.web import ID, BaseHandler, Created, ListQuery, operation


class NewSiteAdmin(msgspec.Struct, forbid_unknown_fields=True):
    user_id: str


class SiteQuery(ListQuery, forbid_unknown_fields=True):
    """`name`: sites whose name contains it; `kind`: school, village, community or base;
    `coord_type`: the system of the locations (WGS-84 unless asked; gcj02 for WeChat maps)."""

    kind: sites.SiteKind | None = None
    name: line(50, 0) | None = None
    coord_type: sites.CoordType = "wgs84"


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

    @operation(
        "Sites the caller may see, by kind and name",
        query=SiteQuery,
        response=sites.SitePage,
        errors=(403, 404),
        permission="site.read",
    )
    async def get(self) -> None:
        q = self.query
        org_ids, site_ids = await self.scopes(q.org_id)
        self.reply(
            await sites.list_sites(
                self.ctx,
                org_ids,
                site_ids=site_ids,
                kind=q.kind,
                name=q.name,
                cursor=q.cursor,
                limit=q.limit,
                coord_type=q.coord_type,
            )
        )


class SiteHandler(BaseHandler):
    @operation(
        "A site, its location in the coord_type asked for",
        query=sites.CoordQuery,
        response=sites.Site,
        errors=(403, 404),
        permission="site.read",
    )
    async def get(self, site_id: str) -> None:
        await self.authorize(site=await sites.get_site_doc(self.ctx, site_id))
        self.reply(await sites.get_site(self.ctx, site_id, self.query.coord_type))

    @operation(
        "Change a site's name, kind, place, address, audience or opening hours",
        body=sites.SiteChange,
        response=sites.Site,
        errors=(403, 404),
        permission="site.register",
    )
    async def patch(self, site_id: str) -> None:
        await self.authorize((await sites.get_site_doc(self.ctx, site_id))["org_id"])
        self.reply(await sites.update_site(self.ctx, site_id, self.body))


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
