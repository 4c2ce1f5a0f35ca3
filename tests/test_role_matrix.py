"""Every staff endpoint against every role, inside and outside the organisation's subtree.

The table must name every /api/v1 route: a new staff endpoint without a row fails this file.
"""

from __future__ import annotations

import asyncio
import io
import itertools
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from openpyxl import Workbook

from server.app import all_routes
from server.domain import (
    access,
    activities,
    adjustments,
    campaigns,
    caravans,
    disputes,
    experts,
    hours,
    identity,
    orgs,
    planning,
    projects,
    signups,
    sites,
)
from server.web import XLSX
from tests.conftest import built_once


@dataclass(frozen=True)
class World:
    root: str
    city: str
    county: str
    other_city: str
    site: str
    someone: str  # a user to grant things to
    activity: str  # in the county, manual approval, with `someone` pending
    record: str  # a pending hours record of `someone` at the site
    today: str = ""  # Shanghai date
    caravan: str = ""  # in the county, at a county depot
    request: str = ""  # a visit request of the site, open from today for 5 days
    plan: str = ""  # solved (the request excluded, so nothing to route) and not published
    plan_day: str = ""  # a working day of the plan
    trip: str = ""  # the caravan's trip today, visiting the request
    depot: str = ""
    campaign: str = ""  # the caravan, in the county, over the plan's period
    held: str = ""  # a published activity of the county that took place yesterday
    dead_reminder: str = ""  # a reminder that gave up
    adjustment: str = ""  # a pending request to raise `record` above its bound
    dispute: str = ""  # `someone`'s open dispute of `record`
    expert: str = ""  # a registered expert (农业, from the city), free on the request's date
    expert_request: str = ""  # the county's open expert request (农业) in 10 days
    match: str = ""  # a proposed match of `expert_request` to `expert`, not published
    candidates: tuple[str, ...] = ()  # volunteers not yet experts (calls 1, 2)


@dataclass(frozen=True)
class Row:
    """How to call one operation in the world below; who may is the permission table's."""

    method: str
    route: str
    path: Any  # World -> str
    body: Any  # (World, n) -> dict | None
    at: str = "city"  # where the caller inside is granted the role: "city", or "root"


def _site_body(w: World, n: int) -> dict:
    return {
        "name": f"站点{n}",
        "kind": "school",
        "org_id": w.county,
        "location": {"lng": 113.8, "lat": 35.4},
    }


def _season(w: World) -> bytes:
    """A workbook of one request of the site (the body is xlsx, not JSON)."""
    book = Workbook()
    book.active.title = "走访申请"
    book.active.append(
        ["学校/站点名称或编号", "最早日期", "最晚日期", "时长（分钟）", "受众", "优先级"]
    )
    book.active.append([w.site, _days_ahead(w, 1), _days_ahead(w, 9), 90, None, 5])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


TABLE = [
    Row(
        "POST",
        r"/api/v1/orgs",
        lambda w: "/api/v1/orgs",
        lambda w, n: {"name": f"队{n}", "kind": "team", "parent_id": w.county},
    ),
    Row(
        "POST",
        r"/api/v1/orgs/(?P<org_id>[0-9a-f]{24})/roles",
        lambda w: f"/api/v1/orgs/{w.county}/roles",
        lambda w, n: {"user_id": w.someone, "role": "team_leader"},
    ),
    Row(
        "POST",
        r"/api/v1/sites",
        lambda w: "/api/v1/sites",
        _site_body,
    ),
    Row(
        "GET",
        r"/api/v1/sites/(?P<site_id>[0-9a-f]{24})",
        lambda w: f"/api/v1/sites/{w.site}",
        lambda w, n: None,
    ),
    Row(
        "PATCH",
        r"/api/v1/sites/(?P<site_id>[0-9a-f]{24})",
        lambda w: f"/api/v1/sites/{w.site}",
        lambda w, n: {
            "name": f"改名站点{n}",
            "open_hours": [{"weekday": 1, "start": "08:00", "end": "17:00"}],
        },
    ),
    Row(
        "POST",
        r"/api/v1/sites/(?P<site_id>[0-9a-f]{24})/admins",
        lambda w: f"/api/v1/sites/{w.site}/admins",
        lambda w, n: {"user_id": w.someone},
    ),
]

_A = r"/api/v1/activities/(?P<activity_id>[0-9a-f]{24})"


def _activity_body(w: World, n: int) -> dict:
    return {
        "title": f"活动{n}",
        "description": "科普讲座",
        "org_id": w.county,
        "starts_at": "2031-05-01T09:00:00+08:00",
        "ends_at": "2031-05-01T11:00:00+08:00",
        "capacity": 10,
    }


TABLE += [
    Row(
        "POST",
        r"/api/v1/projects",
        lambda w: "/api/v1/projects",
        lambda w, n: {"name": f"项目{n}", "org_id": w.county},
    ),
    Row("POST", r"/api/v1/activities", lambda w: "/api/v1/activities", _activity_body),
    Row("GET", _A, lambda w: f"/api/v1/activities/{w.activity}", lambda w, n: None),
    Row(
        "PATCH",
        _A,
        lambda w: f"/api/v1/activities/{w.activity}",
        lambda w, n: {"description": f"科普讲座（第{n}次修改）"},
    ),
    Row(
        "POST",
        _A + "/publish",
        lambda w: f"/api/v1/activities/{w.activity}/publish",
        lambda w, n: None,
    ),
    Row(
        "POST",
        _A + "/cancel",
        lambda w: f"/api/v1/activities/{w.activity}/cancel",
        lambda w, n: {},
    ),
    Row(
        "GET",
        _A + "/roster",
        lambda w: f"/api/v1/activities/{w.activity}/roster",
        lambda w, n: None,
    ),
    Row(
        "POST",
        _A + "/capacity",
        lambda w: f"/api/v1/activities/{w.activity}/capacity",
        lambda w, n: {"capacity": 40},
    ),
    Row(
        "POST",
        _A + "/signups/(?P<user_id>[0-9a-f]{24})/(?P<decision>approve|reject)",
        lambda w: f"/api/v1/activities/{w.activity}/signups/{w.someone}/approve",
        lambda w, n: None,
    ),
]

TABLE += [
    Row(
        "GET",
        _A + "/checkin-code",
        lambda w: f"/api/v1/activities/{w.activity}/checkin-code",
        lambda w, n: None,
    ),
    Row(
        "GET",
        r"/api/v1/sites/(?P<site_id>[0-9a-f]{24})/hours",
        lambda w: f"/api/v1/sites/{w.site}/hours",
        lambda w, n: None,
    ),
    Row(
        "POST",
        r"/api/v1/hours/confirm",
        lambda w: "/api/v1/hours/confirm",
        lambda w, n: {"record_ids": [w.record]},
    ),
    Row(
        "POST",
        r"/api/v1/hours/(?P<record_id>[0-9a-f]{24})/adjust",
        lambda w: f"/api/v1/hours/{w.record}/adjust",
        lambda w, n: {"hours": 1.5, "reason": "更正"},
    ),
    Row(
        "GET",
        r"/api/v1/hours/(?P<record_id>[0-9a-f]{24})/history",
        lambda w: f"/api/v1/hours/{w.record}/history",
        lambda w, n: None,
    ),
    Row(
        "GET",
        r"/api/v1/hours/adjustments",
        lambda w: f"/api/v1/hours/adjustments?org_id={w.county}",
        lambda w, n: None,
    ),
    Row(
        "POST",
        r"/api/v1/hours/adjustments/(?P<adjustment_id>[0-9a-f]{24})/approve",
        lambda w: f"/api/v1/hours/adjustments/{w.adjustment}/approve",
        lambda w, n: None,
    ),
    Row(
        "POST",
        r"/api/v1/hours/adjustments/(?P<adjustment_id>[0-9a-f]{24})/reject",
        lambda w: f"/api/v1/hours/adjustments/{w.adjustment}/reject",
        lambda w, n: {"reason": "超出活动时长"},
    ),
    Row(
        "GET",
        r"/api/v1/hours/disputes",
        lambda w: f"/api/v1/hours/disputes?org_id={w.county}",
        lambda w, n: None,
    ),
    Row(
        "POST",
        r"/api/v1/hours/disputes/(?P<dispute_id>[0-9a-f]{24})/resolve",
        lambda w: f"/api/v1/hours/disputes/{w.dispute}/resolve",
        lambda w, n: {"outcome": "rejected", "reason": "核对无误"},
    ),
]

_PLAN = r"/api/v1/plans/(?P<plan_id>[0-9a-f]{24})"


def _days_ahead(w: World, n: int) -> str:
    return (date.fromisoformat(w.today) + timedelta(days=n)).isoformat()


TABLE += [
    Row(
        "POST",
        r"/api/v1/depots",
        lambda w: "/api/v1/depots",
        lambda w, n: {
            "name": f"车场{n}",
            "org_id": w.county,
            "location": {"lng": 113.8, "lat": 35.4},
        },
    ),
    Row(
        "POST",
        r"/api/v1/caravans",
        lambda w: "/api/v1/caravans",
        lambda w, n: {
            "name": f"大篷车{n}",
            "plate": f"豫GK{n:04d}",
            "vehicle_type": "Ⅱ",
            "depot_id": w.depot,
            "org_id": w.county,
        },
    ),
    Row(
        "GET",
        r"/api/v1/caravans/kpis",
        lambda w: f"/api/v1/caravans/kpis?year={w.today[:4]}&org_id={w.county}",
        lambda w, n: None,
    ),
    Row(
        "POST",
        r"/api/v1/visit-requests",
        lambda w: "/api/v1/visit-requests",
        lambda w, n: {
            "site_id": w.site,
            "earliest_date": _days_ahead(w, 1),
            "latest_date": _days_ahead(w, 9),
            "duration_min": 90,
        },
    ),
    Row(
        "POST",
        r"/api/v1/visit-requests/(?P<request_id>[0-9a-f]{24})/decline",
        lambda w: f"/api/v1/visit-requests/{w.request}/decline",
        lambda w, n: {"reason": "车辆已排满"},
    ),
    Row(
        "POST",
        r"/api/v1/visit-requests/(?P<request_id>[0-9a-f]{24})/cancel",
        lambda w: f"/api/v1/visit-requests/{w.request}/cancel",
        lambda w, n: None,
    ),
    Row(
        "GET",
        r"/api/v1/visit-requests/template\.xlsx",
        lambda w: f"/api/v1/visit-requests/template.xlsx?org_id={w.county}",
        lambda w, n: None,
    ),
    Row(
        "POST",
        r"/api/v1/visit-requests/import",
        lambda w: f"/api/v1/visit-requests/import?org_id={w.county}",
        lambda w, n: _season(w),
    ),
    Row(
        "POST",
        r"/api/v1/plans",
        lambda w: "/api/v1/plans",
        lambda w, n: {
            "org_id": w.county,
            "start_date": _days_ahead(w, 200),
            "end_date": _days_ahead(w, 210),
            "time_limit_s": 1,
        },
    ),
    Row("GET", _PLAN, lambda w: f"/api/v1/plans/{w.plan}", lambda w, n: None),
    Row(
        "POST",
        _PLAN + "/pins",
        lambda w: f"/api/v1/plans/{w.plan}/pins",
        lambda w, n: {"request_id": w.request, "caravan_id": w.caravan, "date": w.plan_day},
    ),
    Row(
        "DELETE",
        _PLAN + "/pins/(?P<request_id>[0-9a-f]{24})",
        lambda w: f"/api/v1/plans/{w.plan}/pins/{w.request}",
        lambda w, n: None,
    ),
    Row(
        "POST",
        _PLAN + "/exclusions",
        lambda w: f"/api/v1/plans/{w.plan}/exclusions",
        lambda w, n: {"request_id": w.request},
    ),
    Row(
        "POST",
        _PLAN + "/replan",
        lambda w: f"/api/v1/plans/{w.plan}/replan",
        lambda w, n: None,
    ),
    Row(
        "POST",
        _PLAN + "/publish",
        lambda w: f"/api/v1/plans/{w.plan}/publish",
        lambda w, n: None,
    ),
    Row(
        "POST",
        r"/api/v1/trips",
        lambda w: "/api/v1/trips",
        lambda w, n: {
            "caravan_id": w.caravan,
            "date": _days_ahead(w, -n),
            "odometer_start_km": 1000 * n,
            "odometer_end_km": 1000 * n + 80,
        },
    ),
    Row(
        "POST",
        r"/api/v1/trips/(?P<trip_id>[0-9a-f]{24})/visits/(?P<request_id>[0-9a-f]{24})/confirm",
        lambda w: f"/api/v1/trips/{w.trip}/visits/{w.request}/confirm",
        lambda w, n: None,
    ),
]

_CARAVAN = r"/api/v1/caravans/(?P<caravan_id>[0-9a-f]{24})"

TABLE += [
    Row(
        "PATCH",
        _CARAVAN,
        lambda w: f"/api/v1/caravans/{w.caravan}",
        lambda w, n: {"name": f"辉县{n}号车", "crew_size": 3 + n},
    ),
    Row(
        "POST",
        _CARAVAN + "/retire",
        lambda w: f"/api/v1/caravans/{w.caravan}/retire",
        lambda w, n: None,
    ),
    Row(
        "PUT",
        _CARAVAN + "/unavailable",
        lambda w: f"/api/v1/caravans/{w.caravan}/unavailable",
        lambda w, n: {"dates": [_days_ahead(w, 20 + n)]},
    ),
    Row(
        "GET",
        _CARAVAN + "/targets",
        lambda w: f"/api/v1/caravans/{w.caravan}/targets?year={w.today[:4]}",
        lambda w, n: None,
    ),
    Row(
        "PUT",
        _CARAVAN + "/targets",
        lambda w: f"/api/v1/caravans/{w.caravan}/targets",
        lambda w, n: {"year": int(w.today[:4]), "field_days": 100 + n, "km": 12000},
    ),
]

_CAMPAIGN = r"/api/v1/campaigns/(?P<campaign_id>[0-9a-f]{24})"


def _listing(path: str) -> Row:
    """A list of the county's records (the caller must be allowed in the county or above)."""
    return Row("GET", path, lambda w: f"{path}?org_id={w.county}", lambda w, n: None)


TABLE += [
    _listing(r"/api/v1/sites"),
    _listing(r"/api/v1/activities"),
    _listing(r"/api/v1/depots"),
    _listing(r"/api/v1/caravans"),
    _listing(r"/api/v1/visit-requests"),
    _listing(r"/api/v1/plans"),
    _listing(r"/api/v1/trips"),
    _listing(r"/api/v1/campaigns"),
    Row(
        "POST",
        r"/api/v1/campaigns",
        lambda w: "/api/v1/campaigns",
        lambda w, n: {
            "name": f"沿黄科普行{n}",
            "org_id": w.county,
            "start_date": _days_ahead(w, 300),
            "end_date": _days_ahead(w, 310),
            "caravan_ids": [w.caravan],
        },
    ),
    Row("GET", _CAMPAIGN, lambda w: f"/api/v1/campaigns/{w.campaign}", lambda w, n: None),
]

TABLE += [
    Row(
        "PUT",
        _A + "/reach",
        lambda w: f"/api/v1/activities/{w.held}/reach",
        lambda w, n: {"beneficiaries": 100 + n},
    ),
    Row(
        "GET",
        r"/api/v1/stats/annual",
        lambda w: f"/api/v1/stats/annual?org_id={w.county}&year={w.today[:4]}",
        lambda w, n: None,
    ),
]

TABLE += [
    Row(
        "DELETE",
        r"/api/v1/orgs/(?P<org_id>[0-9a-f]{24})/roles/(?P<user_id>[0-9a-f]{24})/(?P<role>[a-z_]{1,32})",
        lambda w: f"/api/v1/orgs/{w.county}/roles/{w.someone}/dispatcher",
        lambda w, n: None,
    ),
    Row("GET", r"/api/v1/orgs", lambda w: "/api/v1/orgs", lambda w, n: None),
    # A user belongs to no one organisation: disabling them is the province's.
    Row(
        "POST",
        r"/api/v1/users/(?P<user_id>[0-9a-f]{24})/(?P<action>disable|enable)",
        lambda w: f"/api/v1/users/{w.someone}/disable",
        lambda w, n: None,
        at="root",
    ),
    # The outbox belongs to the whole province: held at the root organisation.
    Row("GET", r"/api/v1/reminders", lambda w: "/api/v1/reminders", lambda w, n: None, at="root"),
    Row(
        "POST",
        r"/api/v1/reminders/(?P<reminder_id>[0-9a-f]{24})/retry",
        lambda w: f"/api/v1/reminders/{w.dead_reminder}/retry",
        lambda w, n: None,
        at="root",
    ),
]

# Service records in the national systems' forms.
TABLE += [
    Row(
        "GET",
        r"/api/v1/service-records/export",
        lambda w: f"/api/v1/service-records/export?org_id={w.county}&form=cast&year={w.today[:4]}",
        lambda w, n: None,
    ),
    Row(
        "GET",
        r"/api/v1/service-records/exports",
        lambda w: f"/api/v1/service-records/exports?org_id={w.county}",
        lambda w, n: None,
    ),
]

_EXPERT_PLACE = {"lng": 113.806, "lat": 35.462}
_MATCH = r"/api/v1/expert-matches/(?P<match_id>[0-9a-f]{24})"

# 百名首席科普专家进百县: the county asks; the association (at the root) registers and matches.
TABLE += [
    Row(
        "POST",
        r"/api/v1/experts",
        lambda w: "/api/v1/experts",
        lambda w, n: {
            "user_id": w.candidates[n - 1],
            "name": f"专家{n}",
            "fields": ["农业"],
            "home_city_id": w.city,
            "free_dates": [_days_ahead(w, 10)],
        },
        at="root",
    ),
    Row("GET", r"/api/v1/experts", lambda w: "/api/v1/experts", lambda w, n: None, at="root"),
    Row(
        "PUT",
        r"/api/v1/experts/(?P<expert_id>[0-9a-f]{24})/free-dates",
        lambda w: f"/api/v1/experts/{w.expert}/free-dates",
        lambda w, n: {"dates": [_days_ahead(w, 10), _days_ahead(w, 20 + n)]},
        at="root",
    ),
    Row(
        "POST",
        r"/api/v1/expert-requests",
        lambda w: "/api/v1/expert-requests",
        lambda w, n: {
            "org_id": w.county,
            "fields": ["农业"],
            "dates": [_days_ahead(w, 10 + n)],
            "audience": "种植户",
            "place": f"辉县市科技馆{n}",
            "location": _EXPERT_PLACE,
        },
    ),
    _listing(r"/api/v1/expert-requests"),
    Row(
        "POST",
        r"/api/v1/expert-matches",
        lambda w: "/api/v1/expert-matches",
        lambda w, n: {"from": _days_ahead(w, 1), "to": _days_ahead(w, 30)},
        at="root",
    ),
    Row("GET", _MATCH, lambda w: f"/api/v1/expert-matches/{w.match}", lambda w, n: None, at="root"),
    Row(
        "POST",
        _MATCH + "/swap",
        lambda w: f"/api/v1/expert-matches/{w.match}/swap",
        lambda w, n: {"request_id": w.expert_request, "expert_id": w.expert},
        at="root",
    ),
    Row(
        "POST",
        _MATCH + "/publish",
        lambda w: f"/api/v1/expert-matches/{w.match}/publish",
        lambda w, n: None,
        at="root",
    ),
]

ROUTES = {
    (method, pattern): getattr(handler, method.lower()).operation
    for pattern, handler in all_routes()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
    if getattr(getattr(handler, method.lower(), None), "operation", None)
}


def _permission(row: Row) -> str:
    return ROUTES[(row.method, row.route)].permission


def test_every_staff_operation_has_a_permission_and_a_row():
    rows = {(r.method, r.route) for r in TABLE}
    for (method, pattern), operation in ROUTES.items():
        if not pattern.startswith("/api/v1"):
            continue
        assert operation.permission in access.PERMISSIONS, f"{method} {pattern} has no permission"
        assert (method, pattern) in rows, f"{method} {pattern} has no row"
    assert rows <= set(ROUTES), rows - set(ROUTES)


def test_no_role_is_named_in_the_http_layers():
    import handlers
    import miniprogram_api

    for package in (handlers, miniprogram_api):
        for path in Path(package.__file__).parent.glob("*.py"):
            text = path.read_text()
            for role in access.STAFF_ROLES:
                assert f'"{role}"' not in text, f"{path.name} names the role {role}"


@pytest.fixture
async def world(ctx):
    """The same world for every case (built anew, it took half a second a case)."""
    yield await built_once(ctx, "role_matrix", _build)
    await ctx.solves.drain()


async def _build(ctx) -> World:
    root = await orgs.create_org(ctx, "省科协", "province", None)
    # An expert's home city is measured from its seat: the city needs its adcode.
    city = await orgs.create_org(ctx, "新乡市科协", "city", root, adcode="410700")
    county = await orgs.create_org(ctx, "辉县市科协", "county", city)
    other_city = await orgs.create_org(ctx, "安阳市科协", "city", root)
    site = await sites.create_site(
        ctx,
        sites.NewSite(
            name="辉县市第一小学",
            kind="school",
            org_id=str(county),
            location=sites.LocationIn(lng=113.8, lat=35.46),
        ),
    )
    someone = await identity.ensure_user(ctx, "o_someone")
    start = ctx.clock.now() + timedelta(days=3)
    activity = await activities.create_activity(
        ctx,
        activities.NewActivity(
            title="科普进校园",
            description="科学实验秀",
            org_id=str(county),
            starts_at=start,
            ends_at=start + timedelta(hours=2),
            capacity=30,
            approval="manual",
        ),
        created_by=someone,
    )
    await activities.publish(ctx, activity, publisher_openid="o_someone")
    await signups.sign_up(ctx, someone, activity)
    record = await hours.credit(
        ctx, user_id=someone, hours=2, org_id=county, site_id=site, source="activity"
    )
    raising = hours.Adjustment(hours=5, reason="加班三小时")
    adjustment = (await adjustments.adjust(ctx, None, record, raising)).pending_adjustment_id
    await disputes.raise_dispute(ctx, someone, record, "时长有误")
    [dispute] = (await disputes.list_disputes(
        ctx, org_ids=[county], site_ids=[], status="open", cursor=None
    )).items  # fmt: skip
    today = ctx.clock.local_now().date()
    depot = await caravans.create_depot(
        ctx,
        caravans.NewDepot(
            name="辉县市车场", org_id=str(county), location=sites.LocationIn(lng=113.8, lat=35.4)
        ),
    )
    caravan = await caravans.create_caravan(
        ctx,
        caravans.NewCaravan(
            name="辉县一号车",
            plate="豫GK9999",
            vehicle_type="II",
            depot_id=str(depot),
            org_id=str(county),
        ),
    )
    request = await caravans.create_request(
        ctx,
        caravans.NewVisitRequest(
            site_id=str(site),
            earliest_date=today,
            latest_date=today + timedelta(days=5),
            duration_min=90,
        ),
    )
    new_plan = planning.NewPlan(
        org_id=str(county),
        start_date=today + timedelta(days=1),
        end_date=today + timedelta(days=14),
        time_limit_s=1,
    )
    plan = await planning.create_plan(ctx, new_plan, created_by=someone, start=False)
    await planning.exclude(ctx, plan, str(request))
    planning.start_solving(ctx, plan)
    await ctx.solves.wait(plan, 30)
    plan_day = planning.working_days(await planning.get_plan_doc(ctx, plan))[0]
    campaign = await campaigns.create_campaign(
        ctx,
        campaigns.NewCampaign(
            name="沿黄科普行",
            org_id=str(county),
            start_date=today + timedelta(days=1),
            end_date=today + timedelta(days=14),
            caravan_ids=[str(caravan)],
        ),
    )
    trip = await caravans.log_trip(
        ctx,
        caravans.NewTrip(
            caravan_id=str(caravan),
            date=today,
            odometer_start_km=100,
            odometer_end_km=180,
            visits=[caravans.TripVisitIn(request_id=str(request), beneficiaries=120)],
        ),
        logged_by=someone,
    )
    yesterday = ctx.clock.now() - timedelta(days=1)
    held = activities.activity_doc(
        ctx, title="昨日科普", description="", org_id=county, starts_at=yesterday,
        ends_at=yesterday + timedelta(hours=2), capacity=10, created_by=someone, status="published",
    )  # fmt: skip
    await activities.import_activities(ctx, [held])
    await access.grant_role(ctx, someone, "dispatcher", county)
    dead = await ctx.db.reminders.insert_one(
        {"state": "dead", "template_key": "activity_reminder", "user_id": someone, "attempts": 5,
         "due_at": yesterday, "dedupe": "dead:1", "last_error": "45009 reach max api daily quota"}
    )  # fmt: skip
    expert = await experts.register_expert(
        ctx,
        experts.NewExpert(
            user_id=str(await identity.ensure_user(ctx, "o_expert")),
            name="张农",
            fields=["农业"],
            home_city_id=str(city),
            free_dates=[today + timedelta(days=10)],
        ),
        by=None,
    )
    expert_request = await experts.create_request(
        ctx,
        experts.NewExpertRequest(
            org_id=str(county),
            fields=["农业"],
            dates=[today + timedelta(days=10)],
            audience="种植户",
            place="辉县市科技馆",
            location=sites.LocationIn(**_EXPERT_PLACE),
        ),
        by=someone,
    )
    period = experts.NewMatch(from_=today + timedelta(days=1), to=today + timedelta(days=30))
    match = await experts.propose(ctx, period, by=None)
    candidates = [await identity.ensure_user(ctx, f"o_candidate_{n}") for n in (1, 2)]
    return World(
        str(root),
        str(city),
        str(county),
        str(other_city),
        str(site),
        str(someone),
        str(activity),
        str(record),
        today.isoformat(),
        str(caravan),
        str(request),
        str(plan),
        plan_day,
        str(trip),
        str(depot),
        campaign=str(campaign),
        held=str(held["_id"]),
        dead_reminder=str(dead.inserted_id),
        adjustment=adjustment,
        dispute=dispute.dispute_id,
        expert=str(expert),
        expert_request=str(expert_request),
        match=match.id,
        candidates=tuple(str(c) for c in candidates),
    )


@pytest.mark.parametrize(("row", "role"), list(itertools.product(TABLE, access.ROLES)))
async def test_role_matrix(ctx, http, login, world, row, role):
    """The role in the caller's own subtree is allowed exactly when the permission table says
    so; the same role in another city's subtree never is, except for what every signed-in user
    may read (their own view of it)."""
    allowed = access.roles_holding(_permission(row))
    inside = await login()
    outside = await login()
    if role != "volunteer":
        top = world.root if row.at == "root" else world.city
        await access.grant_role(ctx, ObjectId(inside.user_id), role, ObjectId(top))
        await access.grant_role(ctx, ObjectId(outside.user_id), role, ObjectId(world.other_city))

    async def call(session, n):
        body = row.body(world, n)
        headers = dict(session.headers)
        if isinstance(body, bytes):
            kwargs = {"content": body}
            headers["Content-Type"] = XLSX
        else:
            kwargs = {"json": body} if body is not None else {}
        return await http.request(row.method, row.path(world), headers=headers, **kwargs)

    answer = await call(inside, 1)
    if role in allowed:
        assert answer.status_code < 300, (role, answer.text)
    else:
        assert answer.status_code == 403, (role, answer.text)
        assert answer.json()["error"]["code"] == "forbidden"
    other = await call(outside, 2)
    if "volunteer" in allowed:
        assert other.status_code < 300, (role, other.text)
    else:
        assert other.status_code == 403, (role, other.text)
        assert other.json()["error"]["code"] == "forbidden"


async def test_a_named_site_admin_sees_only_their_site(ctx, http, login, world):
    admin = await login()
    other = await sites.create_site(
        ctx,
        sites.NewSite(
            name="另一所学校",
            kind="school",
            org_id=world.county,
            location=sites.LocationIn(lng=113.81, lat=35.47),
        ),
    )
    await sites.add_admin(ctx, ObjectId(world.site), ObjectId(admin.user_id))
    user = ObjectId(admin.user_id)
    theirs = await sites.get_site_doc(ctx, world.site)
    assert await access.may(ctx, user, "hours.confirm", site=theirs)
    assert not await access.may(
        ctx, user, "hours.confirm", site=await sites.get_site_doc(ctx, other)
    )
    assert not await access.may(ctx, user, "hours.confirm", org_id=world.county)
    listing = await http.get(f"/api/v1/sites/{other}/hours", headers=admin.headers)
    assert listing.status_code == 403
    mine = await http.get(f"/api/v1/sites/{world.site}/hours", headers=admin.headers)
    assert mine.status_code == 200
    site = await http.get(f"/api/v1/sites/{world.site}", headers=admin.headers)
    assert site.status_code == 200 and site.json()["admin_ids"] == [admin.user_id]
    me = (await http.get("/mp/v1/me", headers=admin.headers)).json()
    assert me["admin_site_ids"] == [world.site]
    assert {"role": "site_admin", "org_id": world.county, "site_id": world.site} in me["roles"]


async def test_site_admins_named_on_the_site_become_grants_at_start(ctx, world):
    user = await identity.ensure_user(ctx, "o_old_admin")
    await ctx.db.sites.update_one({"_id": ObjectId(world.site)}, {"$set": {"admin_ids": [user]}})
    await access.migrate(ctx)
    await access.migrate(ctx)  # a second start finds nothing more to move
    assert await access.site_admins(ctx, ObjectId(world.site)) == [user]
    assert "admin_ids" not in await sites.get_site_doc(ctx, world.site)


async def test_a_revoked_role_ends_at_once(ctx, http, login, world):
    admin, staff = await login(), await login()
    await access.grant_role(ctx, ObjectId(admin.user_id), "org_admin", ObjectId(world.root))
    await access.grant_role(ctx, ObjectId(staff.user_id), "dispatcher", ObjectId(world.county))
    before = await http.get(f"/api/v1/depots?org_id={world.county}", headers=staff.headers)
    assert before.status_code == 200
    path = f"/api/v1/orgs/{world.county}/roles/{staff.user_id}/dispatcher"
    assert (await http.delete(path, headers=staff.headers)).status_code == 403
    revoked = await http.delete(path, headers=admin.headers)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    after = await http.get(f"/api/v1/depots?org_id={world.county}", headers=staff.headers)
    assert after.status_code == 403
    again = await http.delete(path, headers=admin.headers)
    assert again.status_code == 404


async def test_the_root_keeps_its_last_admin_even_when_two_revoke_each_other_at_once(
    ctx, http, login, world
):
    root = ObjectId(world.root)
    for round_ in range(5):
        await ctx.db.role_grants.delete_many({"role": "org_admin", "org_id": root})
        a, b = await login(), await login()
        for admin in (a, b):
            await access.grant_role(ctx, ObjectId(admin.user_id), "org_admin", root)
        answers = await asyncio.gather(
            http.delete(
                f"/api/v1/orgs/{world.root}/roles/{b.user_id}/org_admin", headers=a.headers
            ),
            http.delete(
                f"/api/v1/orgs/{world.root}/roles/{a.user_id}/org_admin", headers=b.headers
            ),
        )
        codes = sorted(r.status_code for r in answers)
        left = await ctx.db.role_grants.count_documents({"role": "org_admin", "org_id": root})
        assert left == 1, (round_, codes)
        # The one whose grant went first may find itself no longer allowed (403) before its own
        # transaction starts; either way exactly one revocation took effect.
        assert codes[0] == 200 and codes[1] in (403, 409), (round_, codes)
    survivor = await ctx.db.role_grants.find_one({"role": "org_admin", "org_id": root})
    me = next(s for s in (a, b) if ObjectId(s.user_id) == survivor["user_id"])
    last = await http.delete(
        f"/api/v1/orgs/{world.root}/roles/{me.user_id}/org_admin", headers=me.headers
    )
    assert last.status_code == 409 and last.json()["error"]["code"] == "last_admin"
    assert "最后一位能登录的管理员" in last.json()["error"]["message"]
    assert await ctx.db.role_grants.count_documents({"role": "org_admin", "org_id": root}) == 1
    # A county's admins are not the province's last line: its last one may go.
    county_admin = await login()
    await access.grant_role(
        ctx, ObjectId(county_admin.user_id), "org_admin", ObjectId(world.county)
    )
    path = f"/api/v1/orgs/{world.county}/roles/{county_admin.user_id}/org_admin"
    assert (await http.delete(path, headers=me.headers)).status_code == 200


async def test_the_root_keeps_an_admin_who_can_sign_in(ctx, http, login, world):
    root = ObjectId(world.root)
    await ctx.db.role_grants.delete_many({"role": "org_admin", "org_id": root})

    async def admins(n: int) -> list:
        sessions = [await login() for _ in range(n)]
        for admin in sessions:
            await access.grant_role(ctx, ObjectId(admin.user_id), "org_admin", root)
        return sessions

    def disable(user, by):
        return http.post(f"/api/v1/users/{user.user_id}/disable", headers=by.headers)

    def revoke(user, by):
        path = f"/api/v1/orgs/{world.root}/roles/{user.user_id}/org_admin"
        return http.delete(path, headers=by.headers)

    [alone] = await admins(1)
    refused = await disable(alone, alone)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "last_admin"
    assert (await http.get("/api/v1/orgs", headers=alone.headers)).status_code == 200

    # Two admins disabling each other, or one revoking while the other disables, at once: one
    # change holds, and the root keeps an admin who can sign in.
    for round_ in range(3):
        for pair in ((disable, disable), (revoke, disable)):
            await ctx.db.role_grants.delete_many({"role": "org_admin", "org_id": root})
            a, b = await admins(2)
            answers = await asyncio.gather(pair[0](b, a), pair[1](a, b))
            codes = sorted(r.status_code for r in answers)
            assert codes[0] == 200 and codes[1] in (401, 403, 409), (round_, pair, codes)
            able = [
                g for g in await access.grants_in(ctx, root)
                if g["role"] == "org_admin"
                and (await ctx.db.users.find_one({"_id": g["user_id"]})).get("disabled_at") is None
            ]  # fmt: skip
            assert len(able) == 1, (round_, pair, codes)

    # A disabled admin's grant does not count: the last one who can sign in stays.
    await ctx.db.role_grants.delete_many({"role": "org_admin", "org_id": root})
    a, b = await admins(2)
    assert (await disable(b, a)).status_code == 200
    last = await revoke(a, a)
    assert last.status_code == 409 and last.json()["error"]["code"] == "last_admin"
    # Enabled again, it counts again.
    assert (
        await http.post(f"/api/v1/users/{b.user_id}/enable", headers=a.headers)
    ).status_code == 200
    assert (await revoke(a, a)).status_code == 200


async def test_references_outside_the_callers_scope_are_refused(ctx, http, login, world):
    """A county's organiser may not use another county's site, project, depot or caravan."""
    other_county = await orgs.create_org(ctx, "林州市科协", "county", ObjectId(world.other_city))
    foreign_site = await sites.create_site(
        ctx,
        sites.NewSite(
            name="林州市实验小学", kind="school", org_id=str(other_county),
            location=sites.LocationIn(lng=113.82, lat=36.08),
        ),
    )  # fmt: skip
    foreign_project = await projects.create_project(
        ctx, projects.NewProject(name="林州科普", org_id=str(other_county)), created_by=None
    )
    foreign_depot = await caravans.create_depot(
        ctx,
        caravans.NewDepot(
            name="林州车场",
            org_id=str(other_county),
            location=sites.LocationIn(lng=113.8, lat=36.1),
        ),
    )
    staff = await login()
    await access.grant_role(ctx, ObjectId(staff.user_id), "dispatcher", ObjectId(world.county))
    activity = {**_activity_body(world, 1)}
    for extra, field in (({"site_id": str(foreign_site)}, "site_id"),
                         ({"project_id": str(foreign_project)}, "project_id")):  # fmt: skip
        refused = await http.post("/api/v1/activities", json={**activity, **extra},
                                  headers=staff.headers)  # fmt: skip
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == {
            "code": "forbidden", "message": refused.json()["error"]["message"], "field": field,
        }  # fmt: skip
    caravan = {"name": "车", "plate": "豫GK0001", "vehicle_type": "Ⅱ",
               "depot_id": str(foreign_depot), "org_id": world.county}  # fmt: skip
    refused = await http.post("/api/v1/caravans", json=caravan, headers=staff.headers)
    assert refused.status_code == 403 and refused.json()["error"]["field"] == "depot_id"
    plan = {"org_id": world.county, "start_date": _days_ahead(world, 100),
            "end_date": _days_ahead(world, 110), "caravan_ids": [world.caravan]}  # fmt: skip
    assert (await http.post("/api/v1/plans", json=plan, headers=staff.headers)).status_code == 202
    outsider = await login()
    await access.grant_role(ctx, ObjectId(outsider.user_id), "dispatcher", other_county)
    theirs = {**plan, "org_id": str(other_county)}
    refused = await http.post("/api/v1/plans", json=theirs, headers=outsider.headers)
    assert refused.status_code == 403 and refused.json()["error"]["field"] == "caravan_ids"
    assert await ctx.db.activities.count_documents({}) == 2


async def test_orgs_show_the_callers_subtree(ctx, http, login, world):
    staff = await login()
    await access.grant_role(ctx, ObjectId(staff.user_id), "dispatcher", ObjectId(world.city))
    listed = (await http.get("/api/v1/orgs", headers=staff.headers)).json()["items"]
    assert [o["name"] for o in listed] == ["新乡市科协", "辉县市科协"]
    volunteer = await login()
    assert (await http.get("/api/v1/orgs", headers=volunteer.headers)).json() == {"items": []}


async def test_org_tree_rules(ctx, http, login, world):
    admin = await login()
    await access.grant_role(ctx, ObjectId(admin.user_id), "org_admin", ObjectId(world.root))
    bad_kind = await http.post(
        "/api/v1/orgs",
        json={"name": "x", "kind": "city", "parent_id": world.county},
        headers=admin.headers,
    )
    assert bad_kind.status_code == 400 and bad_kind.json()["error"]["field"] == "kind"
    missing = await http.post(
        "/api/v1/orgs",
        json={"name": "x", "kind": "team", "parent_id": "0" * 24},
        headers=admin.headers,
    )
    assert missing.status_code in (403, 404)
    created = await http.post(
        "/api/v1/orgs",
        json={"name": "辉县科普志愿服务队", "kind": "team", "parent_id": world.county},
        headers=admin.headers,
    )
    assert created.status_code == 201
    team = await orgs.get_org(ctx, created.json()["id"])
    assert [str(a) for a in team["ancestors"]] == [world.root, world.city, world.county]


async def test_granting_is_idempotent_and_shows_at_next_login(ctx, http, login, emulator, world):
    admin = await login()
    await access.grant_role(ctx, ObjectId(admin.user_id), "org_admin", ObjectId(world.root))
    target = await login("o_future_dispatcher")
    body = {"user_id": target.user_id, "role": "dispatcher"}
    first = await http.post(f"/api/v1/orgs/{world.city}/roles", json=body, headers=admin.headers)
    again = await http.post(f"/api/v1/orgs/{world.city}/roles", json=body, headers=admin.headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["created"] is False
    relogged = await login("o_future_dispatcher")
    me = (await http.get("/mp/v1/me", headers=relogged.headers)).json()
    assert {"role": "dispatcher", "org_id": world.city} in me["roles"]
    bad = await http.post(
        f"/api/v1/orgs/{world.city}/roles",
        json={"user_id": target.user_id, "role": "king"},
        headers=admin.headers,
    )
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "role"


async def test_sites_take_gcj02_and_store_wgs84(ctx, http, login, world):
    admin = await login()
    await access.grant_role(ctx, ObjectId(admin.user_id), "org_admin", ObjectId(world.root))
    created = await http.post(
        "/api/v1/sites",
        json={
            "name": "城关小学",
            "kind": "school",
            "org_id": world.county,
            "location": {"lng": 113.80601, "lat": 35.46208, "coord_type": "gcj02"},
            "open_hours": [{"weekday": 1, "start": "08:00", "end": "17:00"}],
        },
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    site = await sites.get_site_doc(ctx, created.json()["id"])
    lng, lat = site["location"]["coordinates"]
    assert 0.001 < abs(lng - 113.80601) + abs(lat - 35.46208) < 0.02  # shifted back to WGS-84
    bad_hours = await http.post(
        "/api/v1/sites",
        json={
            **_site_body(world, 9),
            "open_hours": [{"weekday": 8, "start": "08:00", "end": "17:00"}],
        },
        headers=admin.headers,
    )
    assert bad_hours.status_code == 400
    assert bad_hours.json()["error"]["field"] == "open_hours[0].weekday"
