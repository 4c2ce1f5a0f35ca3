"""Demo data for `make run`: a province, three cities with their counties (from the offline
gazetteer), teams, bases, sites and staff, so a fresh install shows a populated system.

Loaded only into an empty database (one without a root organisation), through the domain
functions, so it obeys the same rules as data entered through the API.
"""

from __future__ import annotations

import math
import random

import structlog

from server import geo
from server.domain import identity, orgs, sites

log = structlog.get_logger(__name__)

PROVINCE = ("河南省科学技术协会", "410000")
CITIES = [("郑州市", "4101"), ("新乡市", "4107"), ("安阳市", "4105")]
DEMO_ADMIN_OPENID = "demo_admin"
DEMO_DISPATCHER_OPENID = "demo_dispatcher"
DEMO_SITE_ADMIN_OPENID = "demo_site_admin"
SCHOOL_HOURS = [{"weekday": d, "start": "08:00", "end": "17:00"} for d in range(1, 6)]


def _scatter(rng: random.Random, lng: float, lat: float, max_km: float) -> sites.LocationIn:
    """A point within max_km of (lng, lat), uniform over the disc."""
    distance = max_km * math.sqrt(rng.random())
    bearing = rng.uniform(0, 2 * math.pi)
    dlat = distance / 111.0 * math.cos(bearing)
    dlng = distance / (111.0 * math.cos(math.radians(lat))) * math.sin(bearing)
    return sites.LocationIn(lng=round(lng + dlng, 6), lat=round(lat + dlat, 6))


async def seed_demo(ctx, *, seed: int = 2026) -> bool:
    """Load the demo once; False when the database already has data."""
    if await orgs.root_org(ctx) is not None:
        return False
    rng = random.Random(seed)
    admin_openid = ctx.settings.bootstrap_admin_openid or DEMO_ADMIN_OPENID
    admin = await identity.ensure_user(ctx, admin_openid)
    root = await orgs.create_org(ctx, PROVINCE[0], "province", None, adcode=PROVINCE[1])
    await orgs.grant_role(ctx, admin, "org_admin", root)
    dispatcher = await identity.ensure_user(ctx, DEMO_DISPATCHER_OPENID)
    site_admin = await identity.ensure_user(ctx, DEMO_SITE_ADMIN_OPENID)
    await orgs.create_org(ctx, "河南省科普志愿服务总队", "team", root)

    counts = {"cities": 0, "counties": 0, "teams": 1, "bases": 0, "sites": 0}
    for city_name, prefix in CITIES:
        city = await orgs.create_org(ctx, f"{city_name}科协", "city", root, adcode=prefix + "00")
        counts["cities"] += 1
        await orgs.grant_role(ctx, dispatcher, "dispatcher", city)
        await orgs.create_org(ctx, f"{city_name}科技馆科普教育基地", "base", city)
        counts["bases"] += 1
        for county_row in geo.counties_of(prefix):
            adcode = county_row["adcode"][:6]
            county = await orgs.create_org(
                ctx, f"{county_row['name']}科协", "county", city, adcode=adcode
            )
            counts["counties"] += 1
            await orgs.create_org(ctx, f"{county_row['name']}科普志愿服务队", "team", county)
            counts["teams"] += 1
            for kind, label, max_km in (
                ("school", "第一小学", 4),
                ("school", "实验中学", 6),
                ("village", "村综合文化服务中心", 15),
            ):
                site_id = await sites.create_site(
                    ctx,
                    sites.NewSite(
                        name=f"{county_row['name']}{label}",
                        kind=kind,
                        org_id=str(county),
                        location=_scatter(rng, county_row["lng"], county_row["lat"], max_km),
                        audience="中小学生" if kind == "school" else "村民",
                        open_hours=[sites.OpenHours(**h) for h in SCHOOL_HOURS],
                    ),
                )
                counts["sites"] += 1
                if counts["sites"] == 1:
                    await sites.add_admin(ctx, site_id, site_admin)
    log.info("demo_loaded", admin_openid=admin_openid, **counts)
    return True
