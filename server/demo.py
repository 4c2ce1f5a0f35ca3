"""Demo data for `make run`: a province, three cities with their counties (from the offline
gazetteer), teams, bases, sites and staff, a few published activities, today's hours waiting at
one school (and a dispute), and a city's caravans with a season of visit requests to plan, so a
fresh install shows a populated system.

Loaded only into an empty database (one without a root organisation), through the domain
functions, so it obeys the same rules as data entered through the API.
"""

from __future__ import annotations

import math
import random
from datetime import timedelta

import structlog

from server import geo
from server.domain import access, activities, caravans, disputes, hours, identity, orgs, sites

log = structlog.get_logger(__name__)

PROVINCE = ("河南省科学技术协会", "410000")
CITIES = [("郑州市", "4101"), ("新乡市", "4107"), ("安阳市", "4105")]
DEMO_ADMIN_OPENID = "demo_admin"
DEMO_DISPATCHER_OPENID = "demo_dispatcher"
DEMO_SITE_ADMIN_OPENID = "demo_site_admin"
DEMO_COUNTY_ADMIN_OPENID = "demo_county_admin"
SCHOOL_HOURS = [{"weekday": d, "start": "08:00", "end": "17:00"} for d in range(1, 6)]


def staff_logins(settings) -> list[tuple[str, str]]:
    """The demo's staff openids and what each may see, as `make run` prints them for the
    console's development sign-in."""
    return [
        (settings.bootstrap_admin_openid or DEMO_ADMIN_OPENID, "省科协管理员（全省）"),
        (DEMO_DISPATCHER_OPENID, "调度员（三个市）"),
        (DEMO_COUNTY_ADMIN_OPENID, "县科协管理员（第一个县）"),
        (DEMO_SITE_ADMIN_OPENID, "站点管理员（该县的一所学校）"),
    ]


def scatter(rng: random.Random, lng: float, lat: float, max_km: float) -> sites.LocationIn:
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
    await access.grant_role(ctx, admin, "org_admin", root)
    dispatcher = await identity.ensure_user(ctx, DEMO_DISPATCHER_OPENID)
    site_admin = await identity.ensure_user(ctx, DEMO_SITE_ADMIN_OPENID)
    county_admin = await identity.ensure_user(ctx, DEMO_COUNTY_ADMIN_OPENID)
    await orgs.create_org(ctx, "河南省科普志愿服务总队", "team", root)

    counts = {"cities": 0, "counties": 0, "teams": 1, "bases": 0, "sites": 0}
    first_city = None
    for city_name, prefix in CITIES:
        city = await orgs.create_org(ctx, f"{city_name}科协", "city", root, adcode=prefix + "00")
        counts["cities"] += 1
        first_city = first_city or (city, prefix)
        await access.grant_role(ctx, dispatcher, "dispatcher", city)
        await orgs.create_org(ctx, f"{city_name}科技馆科普教育基地", "base", city)
        counts["bases"] += 1
        for county_row in geo.counties_of(prefix):
            adcode = county_row["adcode"][:6]
            county = await orgs.create_org(
                ctx, f"{county_row['name']}科协", "county", city, adcode=adcode
            )
            counts["counties"] += 1
            if counts["counties"] == 1:
                await access.grant_role(ctx, county_admin, "org_admin", county)
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
                        location=scatter(rng, county_row["lng"], county_row["lat"], max_km),
                        audience="中小学生" if kind == "school" else "村民",
                        open_hours=[sites.OpenHours(**h) for h in SCHOOL_HOURS],
                    ),
                )
                counts["sites"] += 1
                if counts["sites"] == 1:
                    await sites.add_admin(ctx, site_id, site_admin)
    counts["activities"] = await _demo_activities(ctx, admin_openid)
    counts["pending_hours"] = await _demo_hours(ctx, site_admin, admin_openid)
    counts["caravans"], counts["visit_requests"] = await _demo_caravans(ctx, *first_city)
    log.info("demo_loaded", admin_openid=admin_openid, **counts)
    return True


DEMO_ACTIVITIES = [
    ("科技馆小小讲解员", "为参观的小学生讲解展品", ["讲解", "青少年"], 20),
    ("社区防诈骗科普讲座", "面向老年人的防范电信诈骗讲座", ["安全", "老年人"], 10),
    ("乡村学校天文观测夜", "带领乡村学生用望远镜观察月球和木星", ["天文", "青少年"], 8),
    ("应急救护知识进校园", "心肺复苏与创伤包扎的科普演示", ["健康", "应急"], 15),
]


async def _demo_activities(ctx, publisher_openid: str) -> int:
    """A few upcoming activities at demo sites, published so the mini-program lists them."""
    school_sites = await ctx.db["sites"].find({"kind": "school"}).to_list(len(DEMO_ACTIVITIES))
    today = ctx.clock.local_now().replace(hour=9, minute=0, second=0, microsecond=0)
    for day, (site, (title, description, tags, capacity)) in enumerate(
        zip(school_sites, DEMO_ACTIVITIES, strict=False), start=3
    ):
        start = today + timedelta(days=day)
        activity_id = await activities.create_activity(
            ctx,
            activities.NewActivity(
                title=title,
                description=description,
                org_id=str(site["org_id"]),
                site_id=str(site["_id"]),
                starts_at=start,
                ends_at=start + timedelta(hours=3),
                capacity=capacity,
                tags=tags,
            ),
            created_by=None,
        )
        await activities.publish(ctx, activity_id, publisher_openid=publisher_openid)
    return min(len(school_sites), len(DEMO_ACTIVITIES))


DEMO_VOLUNTEERS = [
    "张伟", "王芳", "李娜", "刘洋", "陈静", "杨帆", "赵磊", "黄敏", "周杰", "吴婷", "徐强", "孙丽",
]  # fmt: skip


async def _demo_hours(ctx, site_admin, publisher_openid: str) -> int:
    """Today's activity at the site admin's school, under way, with the volunteers' hours
    waiting for the school to confirm and one volunteer's dispute of a confirmed record, so 服务时长
    has its day's work on a fresh install. Returns the credits left pending."""
    [site_id] = await access.sites_administered(ctx, site_admin)
    site = await sites.get_site_doc(ctx, site_id)
    start = ctx.clock.now() - timedelta(hours=2)
    activity_id = await activities.create_activity(
        ctx,
        activities.NewActivity(
            title="科普进校园·机器人体验课",
            description="志愿者带领学生动手搭建和编程小机器人",
            org_id=str(site["org_id"]),
            site_id=str(site["_id"]),
            starts_at=start,
            ends_at=start + timedelta(hours=3),
            capacity=len(DEMO_VOLUNTEERS),
            tags=["青少年", "信息技术"],
        ),
        created_by=None,
    )
    await activities.publish(ctx, activity_id, publisher_openid=publisher_openid)
    credits, volunteers = [], []
    for n, name in enumerate(DEMO_VOLUNTEERS):
        volunteer = await identity.ensure_user(ctx, f"demo_volunteer_{n + 1:02d}")
        volunteers.append(volunteer)
        await identity.update_profile(ctx, volunteer, identity.ProfileChange(real_name=name))
        credits.append(
            await hours.credit(
                ctx,
                user_id=volunteer,
                hours=2.0,
                org_id=site["org_id"],
                site_id=site["_id"],
                source="activity",
                activity_id=activity_id,
                served_at=start,
            )
        )
    await hours.confirm(ctx, site_admin, [str(credits[0])])
    reason = "我服务了两个半小时，记录少了半小时"
    await disputes.raise_dispute(ctx, volunteers[0], credits[0], reason)
    return len(credits) - 1


DEMO_CARAVANS = 3


async def _demo_caravans(ctx, city, prefix: str) -> tuple[int, int]:
    """The dispatcher's first city: a depot at its first county's seat, three caravans, and a
    visit request from every school and village of the city for the next four weeks."""
    [seat, *_] = geo.counties_of(prefix)
    depot = await caravans.create_depot(
        ctx,
        caravans.NewDepot(
            name=f"{seat['name']}科普大篷车车场",
            org_id=str(city),
            location=sites.LocationIn(lng=seat["lng"], lat=seat["lat"]),
        ),
    )
    for n in range(1, DEMO_CARAVANS + 1):
        await caravans.create_caravan(
            ctx,
            caravans.NewCaravan(
                name=f"科普大篷车{n}号", plate=f"豫A{n:05d}", vehicle_type="II",
                depot_id=str(depot), org_id=str(city), crew_size=3,
            ),
        )  # fmt: skip
    monday = ctx.clock.local_now().date()
    monday += timedelta(days=7 - monday.weekday())
    subtree = await orgs.subtree_ids(ctx, city)
    requested = 0
    async for site in ctx.db["sites"].find({"org_id": {"$in": subtree}}, {"_id": 1}):
        await caravans.create_request(
            ctx,
            caravans.NewVisitRequest(
                site_id=str(site["_id"]), earliest_date=monday,
                latest_date=monday + timedelta(days=25), duration_min=90 + 30 * (requested % 3),
            ),
        )  # fmt: skip
        requested += 1
    return DEMO_CARAVANS, requested
