"""Caravans that change: edited with the checks of their registration, retired (never planned
again, their trips kept), and maintenance days on which a plan gives the caravan no route."""

from __future__ import annotations

from datetime import timedelta

import pytest
from bson import ObjectId

from server.domain import caravans, orgs, sites
from tests.test_caravans import World, offset


@pytest.fixture
async def world(ctx, http, login):
    built = await World(ctx, http).build(login)
    yield built
    await ctx.solves.drain(cancel=True)


async def patch(world, caravan_id: str, body: dict, status: int = 200) -> dict:
    response = await world.http.patch(
        f"/api/v1/caravans/{caravan_id}", json=body, headers=world.dispatcher.headers
    )
    assert response.status_code == status, response.text
    return response.json()


async def listed(world) -> dict[str, dict]:
    response = await world.http.get(
        f"/api/v1/caravans?org_id={world.county}", headers=world.dispatcher.headers
    )
    return {c["id"]: c for c in response.json()["items"]}


async def test_a_caravan_is_edited_with_the_checks_of_its_registration(ctx, world):
    first = await world.caravan(1)
    await world.caravan(2)
    shared = {
        "id": str(
            await caravans.create_depot(
                ctx,
                caravans.NewDepot(
                    name="新乡市共享车场",
                    org_id=str(world.city),
                    location=sites.LocationIn(lng=113.9, lat=35.3),
                ),
            )
        )
    }
    edited = await patch(
        world,
        first,
        {"name": " 辉县科普一号 ", "plate": "豫g12345", "vehicle_type": "Ⅳ", "crew_size": 6,
         "depot_id": shared["id"]},
    )  # fmt: skip
    assert edited == {
        **edited,
        "name": "辉县科普一号",
        "plate": "豫G12345",
        "vehicle_type": "IV",
        "crew_size": 6,
        "depot_id": shared["id"],
        "active": True,
        "unavailable": [],
    }
    assert (await listed(world))[first]["name"] == "辉县科普一号"

    taken = await patch(world, first, {"plate": "豫G00002"}, status=409)
    assert taken["error"]["code"] == "plate_taken" and taken["error"]["field"] == "plate"
    for body, field in (
        ({"vehicle_type": "III"}, "vehicle_type"),
        ({"crew_size": 0}, "crew_size"),
        ({"name": "  "}, "name"),
        ({"odometer_km": 5}, "odometer_km"),
        ({"org_id": str(world.city)}, "org_id"),
    ):
        refused = await patch(world, first, body, status=400)
        assert refused["error"]["field"] == field, refused
    # A depot of another county is not this caravan's to be kept at.
    other = await orgs.create_org(ctx, "卫辉市科协", "county", world.city)
    elsewhere = await caravans.create_depot(
        ctx,
        caravans.NewDepot(
            name="卫辉市车场", org_id=str(other), location=sites.LocationIn(lng=114.0, lat=35.4)
        ),
    )
    refused = await patch(world, first, {"depot_id": str(elsewhere)}, status=403)
    assert refused["error"]["field"] == "depot_id"
    assert (await caravans.get_caravan_doc(ctx, first))["depot_id"] == ObjectId(shared["id"])
    missing = await patch(world, "0" * 24, {"crew_size": 3}, status=404)
    assert missing["error"]["code"] == "not_found"


async def test_a_retired_caravan_is_listed_as_retired_and_never_planned_again(ctx, world):
    kept = await world.caravan(1)
    retired = await world.caravan(2)
    site = await world.site("第一小学", offset(5, 3))
    request = await world.request(site, 0, 4, 60)
    await world.post(
        "/api/v1/trips",
        {"caravan_id": retired, "date": str(ctx.clock.local_now().date() - timedelta(days=2)),
         "odometer_start_km": 100, "odometer_end_km": 160},
    )  # fmt: skip
    out = await world.post(f"/api/v1/caravans/{retired}/retire")
    assert out["active"] is False and out["retired_at"]
    again = await world.post(f"/api/v1/caravans/{retired}/retire")
    assert again["retired_at"] == out["retired_at"]
    assert (await listed(world))[retired]["active"] is False
    assert await ctx.db["trips"].count_documents({"caravan_id": ObjectId(retired)}) == 1

    plan = await world.until_done(await world.plan(time_limit_s=1))
    assert plan["caravan_ids"] == [kept]
    assert [r["caravan_id"] for r in plan["routes"]] == [kept]
    assert [s["request_id"] for s in plan["routes"][0]["stops"]] == [request]
    named = await world.post(
        "/api/v1/plans",
        {"org_id": str(world.county), "start_date": world.monday.isoformat(),
         "end_date": world.monday.isoformat(), "caravan_ids": [retired]},
        status=400,
    )  # fmt: skip
    assert named["error"]["field"] == "caravan_ids"


async def test_no_visit_is_planned_on_a_caravans_maintenance_day(ctx, world):
    first = await world.caravan(1)
    second = await world.caravan(2)
    monday, tuesday = world.monday.isoformat(), (world.monday + timedelta(days=1)).isoformat()
    put = await world.http.put(
        f"/api/v1/caravans/{second}/unavailable",
        json={"dates": [tuesday, monday, tuesday]},
        headers=world.dispatcher.headers,
    )
    assert put.status_code == 200, put.text
    assert put.json()["unavailable"] == [monday, tuesday]
    bad = await world.http.put(
        f"/api/v1/caravans/{second}/unavailable",
        json={"dates": ["2031-02-30"]},
        headers=world.dispatcher.headers,
    )
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "dates[0]"
    # Four long visits a day on Monday and Tuesday: one caravan cannot do them all.
    requests = []
    for i in range(8):
        site = await world.site(f"第{i + 1}小学", offset(4 * (i % 4) - 6, 3 * (i // 4) + 2))
        requests.append(await world.request(site, i // 4, i // 4, 150))
    plan = await world.until_done(await world.plan(days=2, time_limit_s=1))
    world.check(plan)
    days_of = {(r["caravan_id"], r["date"]) for r in plan["routes"]}
    assert days_of and all(caravan == first for caravan, _ in days_of), days_of
    assert plan["unassigned"], "the second caravan's visits have nowhere to go"

    # Back in service: the next plan uses both caravans.
    await world.http.put(
        f"/api/v1/caravans/{second}/unavailable", json={"dates": []},
        headers=world.dispatcher.headers,
    )  # fmt: skip
    assert (await caravans.get_caravan_doc(ctx, second))["unavailable"] == []
    again = await world.until_done(await world.plan(days=2, time_limit_s=1))
    assert {r["caravan_id"] for r in again["routes"]} == {first, second}
