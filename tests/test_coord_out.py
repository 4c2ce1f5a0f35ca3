"""Locations come back in the coordinate system the caller asks for (WeChat maps speak GCJ-02),
WGS-84 otherwise, and the response says which."""

from __future__ import annotations

import pytest
from bson import ObjectId

from server import geo
from server.domain import access
from tests.test_hours import SITE, Scene


@pytest.fixture
async def scene(ctx, http, login):
    return await Scene(ctx, http).build(login)


def _lnglat(location: dict) -> tuple[float, float]:
    assert location["type"] == "Point"
    return tuple(location["coordinates"])


async def _get(http, path: str, session, **params) -> dict:
    answer = await http.get(path, params=params, headers=session.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_activity_listing_and_detail_speak_the_callers_coord_type(scene, login):
    volunteer = await login("o_map_reader")
    shifted = pytest.approx(geo.wgs84_to_gcj02(*SITE), abs=1e-9)
    path = f"/mp/v1/activities/{scene.activity}"

    plain = await _get(scene.http, path, volunteer)
    assert plain["coord_type"] == "wgs84"
    assert _lnglat(plain["location"]) == pytest.approx(SITE, abs=1e-9)
    gcj = await _get(scene.http, path, volunteer, coord_type="gcj02")
    assert gcj["coord_type"] == "gcj02"
    assert _lnglat(gcj["location"]) == shifted
    assert _lnglat(gcj["location"]) != pytest.approx(SITE, abs=1e-5)  # GCJ-02 is shifted

    # Near a GCJ-02 point (the map's own): the item's location in GCJ-02, and said so.
    near = ",".join(str(v) for v in geo.wgs84_to_gcj02(*SITE))
    page = await _get(
        scene.http, "/mp/v1/activities", volunteer, near=near, coord_type="gcj02", radius_km=5
    )
    assert page["coord_type"] == "gcj02"
    [item] = [i for i in page["items"] if i["id"] == str(scene.activity)]
    assert _lnglat(item["location"]) == shifted
    assert item["distance_km"] == pytest.approx(0, abs=0.01)
    listed = await _get(scene.http, "/mp/v1/activities", volunteer)
    assert listed["coord_type"] == "wgs84"
    [item] = [i for i in listed["items"] if i["id"] == str(scene.activity)]
    assert _lnglat(item["location"]) == pytest.approx(SITE, abs=1e-9)

    bad = await scene.http.get(path, params={"coord_type": "mars"}, headers=volunteer.headers)
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"]["field"] == "coord_type"


async def test_a_site_speaks_the_callers_coord_type(ctx, scene, login):
    staff = await login("o_site_reader")
    await access.grant_role(ctx, ObjectId(staff.user_id), "org_admin", scene.county)
    path = f"/api/v1/sites/{scene.site}"
    plain = await _get(scene.http, path, staff)
    assert plain["coord_type"] == "wgs84"
    assert _lnglat(plain["location"]) == pytest.approx(SITE, abs=1e-9)
    for coord_type in ("gcj02", "bd09"):
        site = await _get(scene.http, path, staff, coord_type=coord_type)
        assert site["coord_type"] == coord_type
        assert _lnglat(site["location"]) == pytest.approx(
            geo.from_wgs84(*SITE, coord_type), abs=1e-9
        )


async def test_the_staff_lists_and_an_activity_speak_the_callers_coord_type(ctx, scene, login):
    staff = await login("o_list_reader")
    await access.grant_role(ctx, ObjectId(staff.user_id), "org_admin", scene.county)
    shifted = pytest.approx(geo.wgs84_to_gcj02(*SITE), abs=1e-9)
    for path, listed in (("/api/v1/sites", scene.site), ("/api/v1/activities", scene.activity)):
        plain = await _get(scene.http, path, staff)
        [item] = [i for i in plain["items"] if i["id"] == str(listed)]
        assert item["coord_type"] == "wgs84"
        assert _lnglat(item["location"]) == pytest.approx(SITE, abs=1e-9)
        gcj = await _get(scene.http, path, staff, coord_type="gcj02")
        [item] = [i for i in gcj["items"] if i["id"] == str(listed)]
        assert (item["coord_type"], _lnglat(item["location"])) == ("gcj02", shifted)
    one = await _get(scene.http, f"/api/v1/activities/{scene.activity}", staff, coord_type="gcj02")
    assert (one["coord_type"], _lnglat(one["location"])) == ("gcj02", shifted)
    bad = await scene.http.get(
        "/api/v1/sites", params={"coord_type": "mars"}, headers=staff.headers
    )
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "coord_type")


async def test_a_point_that_leaves_the_globe_once_converted_is_refused(ctx, scene, login):
    """BD-09 shifts a point by about 0.0065°: at -180° that is past the range (the API fuzzer
    found it as a 500)."""
    staff = await login("o_site_mover")
    await access.grant_role(ctx, ObjectId(staff.user_id), "org_admin", scene.county)
    path = f"/api/v1/sites/{scene.site}"
    before = await _get(scene.http, path, staff)
    moved = await scene.http.patch(
        path,
        json={"location": {"coord_type": "bd09", "lng": -180.0, "lat": 0.8}},
        headers=staff.headers,
    )
    assert moved.status_code == 400, moved.text
    assert moved.json()["error"]["field"] == "location"
    assert await _get(scene.http, path, staff) == before


async def test_a_near_point_that_leaves_the_globe_once_converted_is_refused(scene, login):
    volunteer = await login("o_edge_finder")
    edge = await scene.http.get(
        "/mp/v1/activities",
        params={"near": "-180,0.8", "coord_type": "bd09", "radius_km": 5},
        headers=volunteer.headers,
    )
    assert edge.status_code == 400, edge.text
    assert edge.json()["error"]["field"] == "near"
