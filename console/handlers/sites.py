"""站点: the sites the caller may see (search by name and kind, cursor paging through htmx),
registering and editing one, and naming its admins. The map view is /console/sites/map."""

from __future__ import annotations

from console.handlers.staff import StaffPage, parse_form
from server.domain import access, identity, orgs, people, sites
from server.domain.errors import DomainError, Forbidden
from server.domain.ids import parse_id
from server.web import ID

KINDS = {"school": "学校", "village": "村", "community": "社区", "base": "基地", "other": "其他"}
COORD_TYPES = {"wgs84": "WGS-84（GPS）", "gcj02": "GCJ-02（高德/腾讯）", "bd09": "BD-09（百度）"}
PAGE_SIZE = 20


def _site_values(form: StaffPage, *, with_org: bool) -> dict:
    """The site form's fields as the API's body: a place needs both coordinates."""
    values: dict = {"name": form.get_argument("name", ""), "kind": form.arg("kind")}
    if with_org:
        values["org_id"] = form.arg("org_id")
    lng, lat = form.arg("lng"), form.arg("lat")
    if lng or lat or with_org:
        values["location"] = {"lng": lng, "lat": lat, "coord_type": form.arg("coord_type")}
        values["location"] = {k: v for k, v in values["location"].items() if v is not None}
    for optional in ("address", "audience"):
        values[optional] = form.get_argument(optional, "").strip()
    if with_org:
        values = {k: v for k, v in values.items() if v not in (None, "")}
    return {k: v for k, v in values.items() if v is not None}


class SitesPage(StaffPage):
    nav = "sites"

    async def get(self) -> None:
        org_id = self.arg("org_id")
        kind = self.arg("kind") if self.arg("kind") in KINDS else None
        narrowed = access.site_scope(self.ctx, self.staff_id, "site.read")
        result = await sites.list_sites(
            self.ctx,
            await self.scope("site.read", org_id),
            site_ids=[] if org_id else await narrowed,
            kind=kind,
            name=self.arg("name"),
            cursor=self.arg("cursor"),
            limit=PAGE_SIZE,
        )
        listed = await orgs.describe(self.ctx, sorted({parse_id(s.org_id) for s in result.items}))
        template = "sites_list.html" if self.is_fragment() else "sites.html"
        self.render(
            template,
            result=result,
            org_names={o.id: o.name for o in listed},
            kinds=KINDS,
            name=self.arg("name") or "",
            kind=kind or "",
            org_id=org_id or "",
            may_register=await self.holds("site.register"),
        )

    async def post(self) -> None:
        """Register a site, then show it."""
        await self.require_anywhere("site.register")
        try:
            new = parse_form(sites.NewSite, _site_values(self, with_org=True))
            await self.require("site.register", new.org_id)
            site_id = await sites.create_site(self.ctx, new, created_by=self.staff_id)
        except Forbidden:
            raise
        except DomainError as exc:
            await new_site_form(self, exc)
            return
        self.redirect(f"/console/sites/{site_id}")


async def new_site_form(page: StaffPage, error: DomainError | None = None) -> None:
    """The registration form; after a refusal, the values sent and the message by its field."""
    choices = await orgs.describe(page.ctx, await page.scope("site.register"))
    page.set_status(400 if error else 200)
    page.render(
        "sites_new.html",
        orgs=choices,
        kinds=KINDS,
        coord_types=COORD_TYPES,
        error=error,
        values={k: page.get_body_argument(k, "") for k in page.request.body_arguments},
    )


class NewSitePage(StaffPage):
    nav = "sites"

    async def get(self) -> None:
        await new_site_form(self)


class SitePage(StaffPage):
    nav = "sites"

    async def get(self, site_id: str) -> None:
        await self.show(site_id)

    async def show(self, site_id: str, *, error: DomainError | None = None) -> None:
        doc = await sites.get_site_doc(self.ctx, site_id)
        await self.require("site.read", site=doc)
        site = await sites.get_site(self.ctx, site_id)
        org = await orgs.get_org(self.ctx, doc["org_id"])
        admins = await people.briefs(self.ctx, [parse_id(u) for u in site.admin_ids])
        self.set_status(400 if error else 200)
        self.render(
            "sites_detail.html",
            site=site,
            org_name=org["name"],
            admins=admins,
            kinds=KINDS,
            coord_types=COORD_TYPES,
            may_edit=await self.may("site.register", doc["org_id"]),
            may_appoint=await self.may("site.appoint", doc["org_id"]),
            error=error,
            saved=self.get_query_argument("saved", ""),
        )

    async def post(self, site_id: str) -> None:
        """Save the edit form: the API's PATCH, with its validation."""
        doc = await sites.get_site_doc(self.ctx, site_id)
        await self.require("site.register", doc["org_id"])
        try:
            change = parse_form(sites.SiteChange, _site_values(self, with_org=False))
            await sites.update_site(self.ctx, site_id, change)
        except DomainError as exc:
            await self.show(site_id, error=exc)
            return
        self.redirect(f"/console/sites/{site_id}?saved=1")


class SiteAdminsPage(StaffPage):
    async def post(self, site_id: str) -> None:
        doc = await sites.get_site_doc(self.ctx, site_id)
        await self.require("site.appoint", doc["org_id"])
        user_id = parse_id(self.get_argument("user_id", ""), "user_id")
        await identity.get_user(self.ctx, user_id)
        await sites.add_admin(self.ctx, doc["_id"], user_id, by=self.staff_id)
        self.redirect(f"/console/sites/{site_id}?saved=admin")


class SitePeoplePage(StaffPage):
    """The user search of the site-admin form (an htmx fragment)."""

    async def get(self, site_id: str) -> None:
        doc = await sites.get_site_doc(self.ctx, site_id)
        await self.require("site.appoint", doc["org_id"])
        self.render(
            "orgs_people.html",
            found=await people.search(self.ctx, self.get_argument("q", "")),
            query=self.get_argument("q", "").strip(),
            action=f"/console/sites/{site_id}/admins",
            roles=None,
            button="设为站点管理员",
        )


ROUTES = [
    (r"/console/sites", SitesPage),
    (r"/console/sites/new", NewSitePage),
    (rf"/console/sites/(?P<site_id>{ID})", SitePage),
    (rf"/console/sites/(?P<site_id>{ID})/admins", SiteAdminsPage),
    (rf"/console/sites/(?P<site_id>{ID})/people", SitePeoplePage),
]
