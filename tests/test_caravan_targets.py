"""A caravan's target for a year (field days, km), set by the association through the API, and
the progress its trips make toward it: a field day counts once a site confirmed a visit of it,
km count for every logged trip; the KPIs list each targeted caravan with its progress."""

from __future__ import annotations

from datetime import date, timedelta

from bson import ObjectId

from server.domain import access, caravans, orgs, sites

H = 3600


async def test_the_association_sets_a_target_and_the_kpis_show_progress(ctx, http, login):
    if ctx.clock.local_now().timetuple().tm_yday < 4:
        ctx.clock.advance(4 * 24 * H)  # the trips below fall on three days of this year
    root = await orgs.create_org(ctx, "河南省科协", "province", None)
    city = await orgs.create_org(ctx, "新乡市科协", "city", root)
    county = await orgs.create_org(ctx, "辉县市科协", "county", city)
    other_city = await orgs.create_org(ctx, "郑州市科协", "city", root)
    association, dispatcher, outsider, school = [await login() for _ in range(4)]
    await access.grant_role(ctx, ObjectId(association.user_id), "org_admin", city)
    await access.grant_role(ctx, ObjectId(dispatcher.user_id), "dispatcher", county)
    await access.grant_role(ctx, ObjectId(outsider.user_id), "org_admin", other_city)
    here = sites.LocationIn(lng=113.8, lat=35.46)
    site = await sites.create_site(
        ctx, sites.NewSite(name="城关小学", kind="school", org_id=str(county), location=here)
    )
    await sites.add_admin(ctx, site, ObjectId(school.user_id))
    depot = await caravans.create_depot(
        ctx, caravans.NewDepot(name="辉县市车场", org_id=str(county), location=here)
    )
    fleet = []
    for n in (1, 2):
        new = caravans.NewCaravan(name=f"辉县{n}号车", plate=f"豫G2000{n}", vehicle_type="Ⅱ",
                                  depot_id=str(depot), org_id=str(county))  # fmt: skip
        fleet.append(await caravans.create_caravan(ctx, new))
    caravan, idle = (str(c) for c in fleet)
    today = ctx.clock.local_now().date()
    year = today.year
    path = f"/api/v1/caravans/{caravan}/targets"

    body = {"year": year, "field_days": 4, "km": 200}
    refused = await http.put(path, json=body, headers=dispatcher.headers)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    refused = await http.put(path, json=body, headers=outsider.headers)
    assert refused.status_code == 403
    answer = await http.put(path, json=body, headers=association.headers)
    assert answer.status_code == 200, answer.text
    set_at = answer.json()["set_at"]
    assert answer.json() == {
        "caravan_id": caravan, "year": year, "field_days_target": 4, "km_target": 200.0,
        "field_days": 0, "field_days_waiting": 0, "km": 0.0, "field_days_pct": 0.0,
        "km_pct": 0.0, "set_at": set_at,
    }  # fmt: skip
    for bad, field in (
        ({**body, "field_days": 0}, "field_days"),
        ({**body, "km": -5}, "km"),
        ({**body, "year": 1999}, "year"),
        ({**body, "days": 3}, "days"),
        ({"field_days": 3}, "year"),
    ):
        answer = await http.put(path, json=bad, headers=association.headers)
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.json()["error"]["field"] == field, answer.text
    unknown = await http.put(
        f"/api/v1/caravans/{ObjectId()}/targets", json=body, headers=association.headers
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["message"] == "大篷车不存在"
    kept = await http.get(f"{path}?year={year}", headers=dispatcher.headers)
    assert (kept.json()["field_days_target"], kept.json()["km_target"]) == (4, 200.0)
    await http.put(
        f"/api/v1/caravans/{idle}/targets",
        json={"year": year, "km": 1000},
        headers=association.headers,
    )

    # Three days on the road this year (a visit confirmed, one waiting, a transfer with no
    # visit), and one last year, which counts nowhere here.
    async def visit() -> str:
        new = caravans.NewVisitRequest(
            site_id=str(site), earliest_date=today, latest_date=today + timedelta(days=5),
            duration_min=90,
        )  # fmt: skip
        return str(await caravans.create_request(ctx, new))

    confirmed, waiting = await visit(), await visit()
    days = [
        (today, [confirmed], 60.0),
        (today - timedelta(days=1), [waiting], 35.5),
        (today - timedelta(days=2), [], 20.0),
        (date(year - 1, 6, 1), [], 500.0),
    ]
    trips = {}
    for n, (day, requests, km) in enumerate(days):
        new = caravans.NewTrip(
            caravan_id=caravan, date=day, odometer_start_km=1000 * n,
            odometer_end_km=1000 * n + km,
            visits=[caravans.TripVisitIn(request_id=r, beneficiaries=80) for r in requests],
        )  # fmt: skip
        trips[day] = str(await caravans.log_trip(ctx, new, logged_by=ObjectId(dispatcher.user_id)))
    confirm = f"/api/v1/trips/{trips[today]}/visits/{confirmed}/confirm"
    assert (await http.post(confirm, headers=school.headers)).status_code == 200

    progress = (await http.get(f"{path}?year={year}", headers=dispatcher.headers)).json()
    assert progress == {
        "caravan_id": caravan, "year": year, "field_days_target": 4, "km_target": 200.0,
        "field_days": 1, "field_days_waiting": 1, "km": 115.5, "field_days_pct": 25.0,
        "km_pct": 57.8, "set_at": set_at,
    }  # fmt: skip
    last_year = (await http.get(f"{path}?year={year - 1}", headers=dispatcher.headers)).json()
    assert (last_year["field_days_target"], last_year["km"]) == (None, 500.0)
    assert last_year["field_days_pct"] is None

    kpis = await http.get(
        f"/api/v1/caravans/kpis?year={year}&org_id={county}", headers=dispatcher.headers
    )
    assert kpis.status_code == 200, kpis.text
    rows = {c["caravan_id"]: c for c in kpis.json()["caravans"]}
    assert rows[caravan]["target"] == progress
    assert rows[caravan]["km"] == 115.5 and rows[caravan]["activities"] == 1
    assert rows[idle]["target"]["km_target"] == 1000.0 and rows[idle]["km"] == 0
    assert rows[idle]["target"]["km_pct"] == 0.0

    # Neither figure: the year's target goes; the caravan without trips leaves the KPIs.
    for c in (caravan, idle):
        cleared = await http.put(
            f"/api/v1/caravans/{c}/targets", json={"year": year}, headers=association.headers
        )
        assert cleared.status_code == 200
    assert cleared.json()["km_target"] is None and cleared.json()["set_at"] is None
    kpis = await http.get(
        f"/api/v1/caravans/kpis?year={year}&org_id={county}", headers=dispatcher.headers
    )
    assert [(c["caravan_id"], c["target"]) for c in kpis.json()["caravans"]] == [(caravan, None)]


async def test_targets_are_in_the_openapi_document(http):
    document = (await http.get("/openapi.json")).json()
    operations = document["paths"]["/api/v1/caravans/{caravan_id}/targets"]
    assert set(operations) >= {"get", "put"}
    assert {"200", "400", "403", "404"} <= set(operations["put"]["responses"])
