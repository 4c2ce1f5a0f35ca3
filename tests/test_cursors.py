"""Every paged endpoint refuses a cursor it did not issue and honours one it did.

The endpoints are read from /openapi.json (every operation with a `cursor` query parameter), so
a new paged endpoint is covered as soon as it is routed; it needs only its path parameters
below and two items in the world to page through.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from bson import ObjectId

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
    national_records,
    orgs,
    planning,
    signups,
    stats,
)
from server.domain import sites as sites_
from server.domain.paging import page_by_id_any

NEAR = {"lng": 113.8, "lat": 35.46}
VARIANTS = {"/mp/v1/activities": [{}, {"near": f"{NEAR['lng']},{NEAR['lat']}"}]}
"""Endpoints that read more than one kind of cursor: each set of parameters picks one."""


def _cursor(position) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


A_ID = "0" * 24
FORGED = [
    "%%%",  # not base64url at all
    "eyJpIjoi",  # base64 of a JSON text cut short
    base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),  # not JSON
    "A" * 5000,  # far longer than any cursor issued
    _cursor({"s": 1}),  # wrong key, wrong type
    _cursor({"i": {"$gt": ""}}),  # an operator object
    _cursor({"i": {"$ne": None}, "s": {"$gt": ""}}),
    _cursor({"i": [A_ID]}),  # nested junk
    _cursor({"i": None}),
    _cursor({"i": 12345}),
    _cursor({"i": "zz" * 12}),  # not an ObjectId
    _cursor({"i": A_ID, "x": 1}),  # an unknown key beside a good one
    _cursor({"o": -5}),  # a negative offset
    _cursor({"o": 10**30}),  # a huge number
    _cursor({"o": 1e300}),
    _cursor({"o": "5"}),
    _cursor({"o": True}),
    _cursor({"s": "2031-05-01T09:00:00", "i": A_ID}),  # a time without its offset
    _cursor({"s": {"$gt": "2031"}, "i": A_ID}),
    _cursor([{"i": A_ID}]),  # not an object
    _cursor("i"),
    _cursor(None),
]


async def _paged_operations(http) -> list[tuple[str, list[str]]]:
    document = (await http.get("/openapi.json")).json()
    paged = []
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            names = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
            if "cursor" in names:
                assert method == "get", f"{method} {path} pages"
                paged.append((path, names))
    return paged


@pytest.fixture
async def world(ctx, login):
    """Two of everything that pages, in one county, and callers who may read it all."""
    root = await orgs.create_org(ctx, "省科协", "province", None)
    city = await orgs.create_org(ctx, "新乡市科协", "city", root, adcode="410700")
    county = await orgs.create_org(ctx, "辉县市科协", "county", city)
    staff = await login("o_cursor_staff")
    await access.grant_role(ctx, ObjectId(staff.user_id), "org_admin", root)
    volunteer = await login("o_cursor_volunteer")
    volunteer_id = ObjectId(volunteer.user_id)
    place = sites_.LocationIn(**NEAR)
    site, _ = [
        await sites_.create_site(
            ctx, sites_.NewSite(name=name, kind="school", org_id=str(county), location=place)
        )
        for name in ("辉县市第一小学", "辉县市第二小学")
    ]
    start = ctx.clock.now() + timedelta(days=3)
    for n in range(2):
        activity = await activities.create_activity(
            ctx,
            activities.NewActivity(
                title=f"科普进校园{n}",
                description="科学实验秀",
                org_id=str(county),
                starts_at=start + timedelta(days=n),
                ends_at=start + timedelta(days=n, hours=2),
                capacity=30,
                location=place,
            ),
            created_by=None,
        )
        await activities.publish(ctx, activity, publisher_openid="o_cursor_staff")
        await signups.sign_up(ctx, volunteer_id, activity)
        record = await hours.credit(
            ctx, user_id=volunteer_id, hours=2, org_id=county, site_id=site,
            activity_id=activity, source="activity",
        )  # fmt: skip
        # An open dispute, and a request above the activity's 2 hours waiting for approval.
        await disputes.raise_dispute(ctx, volunteer_id, record, "时长有误")
        raising = hours.Adjustment(hours=3, reason="含布展时间")
        await adjustments.adjust(ctx, ObjectId(staff.user_id), record, raising)
    today = ctx.clock.local_now().date()
    fleet = []
    for n in range(2):
        depot = await caravans.create_depot(
            ctx, caravans.NewDepot(name=f"车场{n}", org_id=str(county), location=place)
        )
        caravan = caravans.NewCaravan(
            name=f"辉县{n}号车", plate=f"豫GK000{n}", vehicle_type="II", depot_id=str(depot),
            org_id=str(county),
        )  # fmt: skip
        fleet.append(await caravans.create_caravan(ctx, caravan))
        request = await caravans.create_request(
            ctx,
            caravans.NewVisitRequest(
                site_id=str(site), earliest_date=today, latest_date=today + timedelta(days=5),
                duration_min=90,
            ),
        )  # fmt: skip
        await caravans.log_trip(
            ctx,
            caravans.NewTrip(
                caravan_id=str(fleet[0]), date=today - timedelta(days=n),
                odometer_start_km=100 * n, odometer_end_km=100 * n + 50,
                visits=[caravans.TripVisitIn(request_id=str(request), beneficiaries=40)],
            ),
            logged_by=ObjectId(staff.user_id),
        )  # fmt: skip
        campaign_start = today + timedelta(days=30 + 20 * n)
        await campaigns.create_campaign(
            ctx,
            campaigns.NewCampaign(
                name=f"沿黄科普行{n}", org_id=str(county), start_date=campaign_start,
                end_date=campaign_start + timedelta(days=5), caravan_ids=[str(fleet[0])],
            ),
        )  # fmt: skip
        await planning.create_plan(
            ctx,
            planning.NewPlan(
                org_id=str(county), start_date=today + timedelta(days=1),
                end_date=today + timedelta(days=14),
            ),
            created_by=ObjectId(staff.user_id), start=False,
        )  # fmt: skip
        expert = await identity.ensure_user(ctx, f"o_cursor_expert_{n}")
        await experts.register_expert(
            ctx,
            experts.NewExpert(user_id=str(expert), name=f"专家{n}", fields=["农业"],
                              home_city_id=str(city), free_dates=[today + timedelta(days=10)]),
            by=None,
        )  # fmt: skip
        await experts.create_request(
            ctx,
            experts.NewExpertRequest(
                org_id=str(county), fields=["农业"], dates=[today + timedelta(days=10 + n)],
                audience="种植户", place="辉县市科技馆", location=place,
            ),
            by=None,
        )  # fmt: skip
        year = stats.parse_period(today.year, None, None, today)
        await national_records.export(ctx, ObjectId(staff.user_id), str(county), "cast", year)
    return {
        "path": {"site_id": str(site)},
        "callers": {
            "/api/v1/": staff.headers,
            "/mp/v1/": volunteer.headers,
            "/mp/v1/sites/": staff.headers,  # a site admin's pages, from the phone
        },
    }


def _url(path: str, world: dict) -> str:
    for name in [part[1:-1] for part in path.split("/") if part.startswith("{")]:
        assert name in world["path"], f"{path}: give the world a {name}"
        path = path.replace(f"{{{name}}}", world["path"][name])
    return path


def _caller(path: str, world: dict) -> dict:
    matching = [prefix for prefix in world["callers"] if path.startswith(prefix)]
    return world["callers"][max(matching, key=len)]


async def test_every_paged_endpoint_refuses_forged_cursors(http, world):
    paged = await _paged_operations(http)
    assert {"/mp/v1/activities", "/mp/v1/me/signups", "/api/v1/sites/{site_id}/hours"} <= {
        path for path, _ in paged
    }
    for path, _ in paged:
        url, headers = _url(path, world), _caller(path, world)
        for params in VARIANTS.get(path, [{}]):
            for forged in FORGED:
                answer = await http.get(url, params={**params, "cursor": forged}, headers=headers)
                assert answer.status_code == 400, (path, params, forged, answer.text)
                error = answer.json()["error"]
                assert (error["code"], error["field"]) == ("invalid_request", "cursor"), (
                    path,
                    params,
                    forged,
                    error,
                )


async def test_every_paged_endpoint_honours_its_own_cursor(http, world):
    for path, query in await _paged_operations(http):
        url, headers = _url(path, world), _caller(path, world)
        assert "limit" in query, f"{path} pages without a limit"
        for params in VARIANTS.get(path, [{}]):
            first = await http.get(url, params={**params, "limit": 1}, headers=headers)
            assert first.status_code == 200, (path, params, first.text)
            cursor = first.json()["next_cursor"]
            assert cursor, f"{path} {params}: the world needs two items here"
            second = await http.get(
                url, params={**params, "limit": 1, "cursor": cursor}, headers=headers
            )
            assert second.status_code == 200, (path, params, second.text)
            [one], [two] = first.json()["items"], second.json()["items"]
            assert one != two, (path, params)


async def test_pages_over_several_queries_meet_every_document_once(ctx):
    """page_by_id_any: two overlapping queries (each on its own index), paged by threes."""
    coll = ctx.db["paging_scratch"]
    await coll.insert_many([{"n": n, "odd": n % 2 == 1, "small": n < 6} for n in range(11)])
    queries = [{"odd": True}, {"small": True}]
    seen, cursor = [], None
    while True:
        docs, cursor = await page_by_id_any(coll, queries, cursor, 3)
        assert len(docs) <= 3
        seen.extend(d["n"] for d in docs)
        if cursor is None:
            break
    assert seen == [0, 1, 2, 3, 4, 5, 7, 9]
