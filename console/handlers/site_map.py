"""站点 on a map: the sites the caller may see (the list page's scope and kind filter) as points
over the county outlines shipped in static/geo (no tile server). Reached from /console/sites."""

from __future__ import annotations

from console.handlers.sites import KINDS
from console.handlers.staff import StaffPage
from server import geo
from server.domain import access, orgs, sites
from server.domain.ids import parse_id

# A map of more points than this is unreadable and slow to draw; the page says when it stops.
MAX_POINTS = 5000
PAGE_SIZE = 500
OUTLINES = "geo/henan.json"


class SiteMapPage(StaffPage):
    nav = "sites"

    async def get(self) -> None:
        org_id = self.arg("org_id")
        kind = self.arg("kind") if self.arg("kind") in KINDS else None
        scope = await self.scope("site.read", org_id)
        site_ids = [] if org_id else await access.site_scope(self.ctx, self.staff_id, "site.read")
        found, cursor = [], None
        while True:
            page = await sites.list_sites(
                self.ctx,
                scope,
                site_ids=site_ids,
                kind=kind,
                cursor=cursor,
                limit=min(PAGE_SIZE, MAX_POINTS - len(found)),
            )
            found += page.items
            cursor = page.next_cursor
            if cursor is None or len(found) >= MAX_POINTS:
                break
        described = await orgs.describe(self.ctx, sorted({parse_id(s.org_id) for s in found}))
        org_names = {o.id: o.name for o in described}
        points = []
        for site in found:
            lng, lat = geo.point_lnglat(site.location)
            points.append(
                {"name": site.name, "kind": site.kind, "lng": lng, "lat": lat,
                 "org": org_names.get(site.org_id, ""), "url": f"/console/sites/{site.id}"}
            )  # fmt: skip
        self.render(
            "site_map.html",
            points=points,
            capped=cursor is not None,
            max_points=MAX_POINTS,
            kinds=KINDS,
            kind=kind or "",
            org_id=org_id or "",
            outlines=OUTLINES,
        )


ROUTES = [
    (r"/console/sites/map", SiteMapPage),
]
