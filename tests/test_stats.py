"""Statistics: the report against a plain recount of the raw records, roll-ups kept by events,
the nightly check repairing them, and the exports."""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta

import msgspec
import openpyxl
import pytest
from bson import ObjectId

from jobs.scheduler import Scheduler
from server.clock import SHANGHAI
from server.domain import access, activities, caravans, hours, orgs, signups, sites, stats
from server.domain.errors import Conflict
from server.domain.stats import caravan_kpis
from server.seed import Scale, seed_year
from tests.conftest import built_once

YEAR = 2026
KPI_FIELDS = ("activities", "km", "beneficiaries", "pending")
SMALL = Scale(volunteers=400, activities=160, teams=24, bases=4, projects=6, trips=40, cities=2)


@pytest.fixture
async def year(ctx):
    written = await built_once(ctx, "stats_year", lambda ctx: seed_year(ctx, SMALL))
    assert written["hours_records"] > 500 and written["trips"] == SMALL.trips
    return written


@pytest.fixture
async def admin(ctx, login, year):
    session = await login()
    root = await orgs.root_org(ctx)
    await access.grant_role(ctx, ObjectId(session.user_id), "org_admin", root["_id"])
    return session


async def _published(ctx, team: dict, title: str, start: datetime, **more) -> ObjectId:
    activity_id = await activities.create_activity(
        ctx,
        activities.NewActivity(
            title=title,
            description="",
            org_id=str(team["_id"]),
            starts_at=start,
            ends_at=start + timedelta(hours=2),
            capacity=10,
            **more,
        ),
        created_by=None,
    )
    await activities.publish(ctx, activity_id, publisher_openid="seed_2026_0")
    return activity_id


def _local(moment: datetime) -> datetime:
    return moment.astimezone(SHANGHAI)


async def plain_recount(ctx, org_id: ObjectId, first: date, last: date) -> dict:
    """The report's figures, straight from the raw collections, with no shared code."""
    org_docs = await ctx.db["orgs"].find().to_list(None)
    inside = {d["_id"] for d in org_docs if d["_id"] == org_id or org_id in d["ancestors"]}

    def in_period(moment: datetime) -> bool:
        return first <= _local(moment).date() <= last

    held = [
        a
        for a in await ctx.db["activities"].find().to_list(None)
        if a["status"] in ("published", "ongoing", "finished")
        and "科普大篷车" not in a.get("tags", [])
        and a["org_id"] in inside
        and in_period(a["starts_at"])
    ]
    per_user: Counter = Counter()
    months: dict[str, Counter] = defaultdict(Counter)
    for entry in await ctx.db["hours_ledger"].find({"status": "confirmed"}).to_list(None):
        if entry["org_id"] in inside and in_period(entry["served_at"]):
            per_user[entry["user_id"]] += entry["hours"]
            months[_local(entry["served_at"]).strftime("%Y-%m")]["hours"] += entry["hours"]
    for a in held:
        month = _local(a["starts_at"]).strftime("%Y-%m")
        months[month]["activities"] += 1
        months[month]["beneficiaries"] += a.get("beneficiaries", 0)
    km, visits, reached = 0.0, 0, 0
    for trip in await ctx.db["trips"].find().to_list(None):
        if trip["org_id"] in inside and first.isoformat() <= trip["date"] <= last.isoformat():
            km += trip["km"]
            months[trip["date"][:7]]["km"] += trip["km"]
            for visit in trip["visits"]:
                if visit.get("confirmed"):
                    visits += 1
                    reached += visit["beneficiaries"]
    top = sorted(
        ((round(h, 2), str(u)) for u, h in per_user.items() if round(h, 2) > 0),
        key=lambda pair: (-pair[0], pair[1]),
    )[:10]
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), SHANGHAI)
    projects = await ctx.db["projects"].count_documents(
        {"org_id": {"$in": list(inside)}, "created_at": {"$lt": end}}
    )
    existing = [d for d in org_docs if d["_id"] in inside and d["created_at"] < end]
    return {
        "volunteer": {
            "teams": sum(1 for d in existing if d["kind"] == "team"),
            "bases": sum(1 for d in existing if d["kind"] == "base"),
            "projects": projects,
            "activities": len(held),
            "volunteers": sum(1 for h in per_user.values() if round(h, 6) > 0),
            "hours": round(sum(per_user.values()), 2),
            "beneficiaries": sum(a.get("beneficiaries", 0) for a in held),
        },
        "caravan": {"activities": visits, "km": round(km, 1), "beneficiaries": reached},
        "top_volunteers": [{"user_id": u, "hours": h} for h, u in top],
        "months": {m: dict(c) for m, c in months.items()},
    }


async def _report(http, session, **params) -> dict:
    answer = await http.get("/api/v1/stats/annual", params=params, headers=session.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _assert_matches(report: dict, expected: dict) -> None:
    assert report["volunteer"] == pytest.approx(expected["volunteer"])
    assert report["caravan"] == pytest.approx(expected["caravan"])
    assert [
        {"user_id": t["user_id"], "hours": t["hours"]} for t in report["top_volunteers"]
    ] == expected["top_volunteers"]
    for row in report["months"]:
        want = expected["months"].get(row["key"], {})
        assert row["hours"] == pytest.approx(round(want.get("hours", 0), 2)), row
        assert row["activities"] == want.get("activities", 0), row
        assert row["beneficiaries"] == want.get("beneficiaries", 0), row
        assert row["km"] == pytest.approx(round(want.get("km", 0), 1)), row


async def test_figures_equal_a_plain_recount_for_subtrees_and_periods(ctx, http, admin, year):
    root = await orgs.root_org(ctx)
    city = await ctx.db["orgs"].find_one({"kind": "city"}, sort=[("_id", -1)])
    county = await ctx.db["orgs"].find_one({"kind": "county", "parent_id": city["_id"]})
    whole_year = (date(YEAR, 1, 1), date(YEAR, 12, 31))
    spring = (date(YEAR, 3, 1), date(YEAR, 6, 30))
    for org, (first, last) in [
        (root, whole_year),
        (city, whole_year),
        (county, whole_year),
        (root, spring),
        (city, spring),
    ]:
        if (first, last) == whole_year:
            report = await _report(http, admin, org_id=str(org["_id"]), year=YEAR)
            assert report["source"] == "rollup"
        else:
            report = await _report(
                http, admin, org_id=str(org["_id"]), **{"from": str(first), "to": str(last)}
            )
            assert report["source"] == "recount"
            assert [m["key"] for m in report["months"]] == [
                "2026-03",
                "2026-04",
                "2026-05",
                "2026-06",
            ]
        _assert_matches(report, await plain_recount(ctx, org["_id"], first, last))
    provincial = await _report(http, admin, year=YEAR)
    assert provincial["org_id"] == str(root["_id"])
    assert provincial["volunteer"]["activities"] > 100 and provincial["caravan"]["km"] > 0
    assert sum(c["hours"] for c in provincial["counties"]) == pytest.approx(
        provincial["volunteer"]["hours"], abs=0.05
    )
    assert len(provincial["top_teams_by_hours"]) == 10
    hours_ranked = [t["hours"] for t in provincial["top_teams_by_hours"]]
    assert hours_ranked == sorted(hours_ranked, reverse=True)
    assert (
        provincial["top_sites"][0]["beneficiaries"] >= provincial["top_sites"][-1]["beneficiaries"]
    )
    assert all(t["name"] and "*" in t["name"] for t in provincial["top_volunteers"])


async def test_top_tens_are_the_largest_of_the_subtree(ctx, http, admin, year):
    """The report reads its top tens in bands of each figure, from where the last report's
    tenth stood; they are the ten largest of all the subtree's roll-ups, ties by id, whatever
    the subtree's size, also after the leaders fell below that point."""
    city = await ctx.db["orgs"].find_one({"kind": "city"}, sort=[("_id", -1)])
    county = await ctx.db["orgs"].find_one({"kind": "county", "parent_id": city["_id"]})
    root = await orgs.root_org(ctx)
    await _top_tens_check(ctx, http, admin, [root, city, county])
    await _top_tens_check(ctx, http, admin, [root, city, county])  # from the hints
    inside = {"orgs": root["_id"], "year": YEAR}
    for name, figure, fall in (
        (stats.ORGS, "totals.hours", {"totals.hours": 0.5, "totals.activities": 1}),
        (stats.SITES, "beneficiaries", {"beneficiaries": 1}),
        (stats.PROJECTS, "activities", {"activities": 1}),
    ):
        leaders = ctx.db[name].find(inside, {"_id": 1}).sort(figure, -1).limit(5)
        ids = [d["_id"] async for d in leaders]
        await ctx.db[name].update_many({"_id": {"$in": ids}}, {"$set": fall})
    await _top_tens_check(ctx, http, admin, [root, city, county])


async def _top_tens_check(ctx, http, admin, scopes) -> None:
    for org in scopes:
        report = await _report(http, admin, org_id=str(org["_id"]), year=YEAR)
        inside = {"orgs": org["_id"], "year": YEAR}
        teams = await ctx.db[stats.ORGS].find({**inside, "kind": "team"}).to_list(None)
        for figure, table in (
            ("hours", "top_teams_by_hours"),
            ("activities", "top_teams_by_activities"),
        ):
            ranked = sorted(
                (d for d in teams if d["totals"].get(figure, 0) > 0),
                key=lambda d, f=figure: (-d["totals"][f], str(d["org_id"])),
            )[:10]
            assert [t["org_id"] for t in report[table]] == [str(d["org_id"]) for d in ranked]
        site_docs = await ctx.db[stats.SITES].find(inside).to_list(None)
        ranked = sorted(
            (d for d in site_docs if d["beneficiaries"] > 0),
            key=lambda d: (-d["beneficiaries"], str(d["site_id"])),
        )[:10]
        assert [t["site_id"] for t in report["top_sites"]] == [str(d["site_id"]) for d in ranked]
        project_docs = await ctx.db[stats.PROJECTS].find(inside).to_list(None)
        ranked = sorted(
            (d for d in project_docs if d["activities"] > 0),
            key=lambda d: (-d["activities"], -d["beneficiaries"], str(d["project_id"])),
        )[:10]
        assert [p["project_id"] for p in report["top_projects"]] == [
            str(d["project_id"]) for d in ranked
        ]
        assert len(report["top_sites"]) > 0


async def test_an_adjusted_record_changes_the_totals(ctx, http, login, admin, year):
    before = await _report(http, admin, year=YEAR)
    credit = await ctx.db["hours_ledger"].find_one({"status": "confirmed", "hours": 3.0})
    team = await orgs.get_org(ctx, credit["org_id"])
    organiser = await login()
    await access.grant_role(ctx, ObjectId(organiser.user_id), "team_leader", team["_id"])
    answer = await http.post(
        f"/api/v1/hours/{credit['_id']}/adjust",
        json={"hours": 1.5, "reason": "提前离场"},
        headers=organiser.headers,
    )
    assert answer.status_code == 200, answer.text
    after = await _report(http, admin, year=YEAR)
    assert after["volunteer"]["hours"] == pytest.approx(before["volunteer"]["hours"] - 1.5)
    month = _local(credit["served_at"]).strftime("%Y-%m")
    by_month = {m["key"]: m["hours"] for m in after["months"]}
    was = {m["key"]: m["hours"] for m in before["months"]}
    assert by_month[month] == pytest.approx(was[month] - 1.5)
    assert await stats.reconcile(ctx, YEAR, repair=False) == dict.fromkeys(
        (stats.ORGS, stats.VOLUNTEERS, stats.SITES, stats.PROJECTS), 0
    )


async def test_events_keep_the_rollups_equal_to_a_recount(ctx, year):
    """Publish, report reach, confirm hours (concurrently), log a trip and confirm its visit,
    cancel: afterwards the stored roll-ups are exactly what a full recount gives."""
    root = await orgs.root_org(ctx)
    rollup = f"{root['_id']}:{YEAR}"
    before = (await ctx.db[stats.ORGS].find_one({"_id": rollup}))["totals"]
    team = await ctx.db["orgs"].find_one({"kind": "team"})
    county_id = team["parent_id"]
    site = await ctx.db["sites"].find_one({"org_id": county_id})
    site_admin = await ctx.db["users"].find_one({"openid": "seed_2026_1"})
    await sites.add_admin(ctx, site["_id"], site_admin["_id"])
    start = ctx.clock.now() + timedelta(days=2)
    await _published(ctx, team, "新活动", start, site_id=str(site["_id"]))
    past = await ctx.db["activities"].find_one({"org_id": team["_id"], "status": "finished"})
    await activities.report_reach(ctx, past["_id"], activities.Reach(beneficiaries=4321))
    people = [u["_id"] for u in await ctx.db["users"].find().limit(60).to_list(None)]
    credits = [
        await hours.credit(
            ctx,
            user_id=p,
            hours=2.5,
            org_id=team["_id"],
            source="activity",
            activity_id=ObjectId(),
            site_id=site["_id"],
            served_at=past["starts_at"],
        )
        for p in people
    ]
    ids = [str(c) for c in credits]
    # Overlapping batches at once: every credit must count exactly once.
    await asyncio.gather(
        *(hours.confirm(ctx, site_admin["_id"], ids[i : i + 20]) for i in range(0, 60, 10))
    )
    caravan = await ctx.db["caravans"].find_one({})
    request = await caravans.create_request(
        ctx,
        caravans.NewVisitRequest(
            site_id=str(site["_id"]),
            earliest_date=ctx.clock.local_now().date(),
            latest_date=ctx.clock.local_now().date() + timedelta(days=3),
            duration_min=60,
        ),
    )
    trip = await caravans.log_trip(
        ctx,
        caravans.NewTrip(
            caravan_id=str(caravan["_id"]),
            date=ctx.clock.local_now().date(),
            odometer_start_km=500_000,
            odometer_end_km=500_088,
            visits=[caravans.TripVisitIn(request_id=str(request), beneficiaries=77)],
        ),
        logged_by=site_admin["_id"],
    )
    for _ in range(2):  # a repeat confirmation counts nothing
        await caravans.confirm_visit(ctx, trip, request, by=site_admin["_id"])
    cancelled = await _published(ctx, team, "取消的活动", start)
    await signups.cancel_activity(ctx, cancelled, reason="天气")
    after = (await ctx.db[stats.ORGS].find_one({"_id": rollup}))["totals"]
    assert after["hours"] == pytest.approx(before["hours"] + 60 * 2.5)
    assert after["activities"] == before["activities"] + 1  # the cancelled one came and went
    assert after["beneficiaries"] == before["beneficiaries"] + 4321 - past["beneficiaries"]
    assert after["km"] == pytest.approx(before["km"] + 88)
    assert after["caravan_activities"] == before["caravan_activities"] + 1
    assert after["caravan_beneficiaries"] == before["caravan_beneficiaries"] + 77
    assert await stats.reconcile(ctx, YEAR, repair=False) == dict.fromkeys(
        (stats.ORGS, stats.VOLUNTEERS, stats.SITES, stats.PROJECTS), 0
    )


async def plain_kpis(ctx, org_id: ObjectId, year: int) -> dict:
    """The caravan KPIs straight from the raw trips, with no shared code: per caravan, per
    county (a caravan's nearest county in the subtree) and in total."""
    org_docs = {d["_id"]: d for d in await ctx.db["orgs"].find().to_list(None)}
    inside = {o for o, d in org_docs.items() if o == org_id or org_id in d["ancestors"]}
    per_caravan: dict[str, list] = defaultdict(lambda: [0, 0.0, 0, 0, 0])
    for trip in await ctx.db["trips"].find().to_list(None):
        if trip["org_id"] in inside and trip["date"].startswith(f"{year}-"):
            row = per_caravan[str(trip["caravan_id"])]
            row[1] += trip["km"]
            for visit in trip["visits"]:
                if visit.get("confirmed"):
                    row[0] += 1
                    row[2] += visit["beneficiaries"]
                else:  # awaiting the site, logged today
                    row[3] += 1
                    row[4] += visit["beneficiaries"]
    per_county: dict[str, list] = defaultdict(lambda: [0, 0.0, 0, 0, 0])
    for caravan_id, row in per_caravan.items():
        org = (await ctx.db["caravans"].find_one({"_id": ObjectId(caravan_id)}))["org_id"]
        above = [org, *reversed(org_docs[org]["ancestors"])]
        county = next((o for o in above if o in inside and org_docs[o]["kind"] == "county"), org)
        per_county[str(county)] = [a + b for a, b in zip(per_county[str(county)], row, strict=True)]

    def figures(row: list) -> dict:
        return {
            "activities": row[0],
            "km": pytest.approx(row[1], abs=0.05),
            "beneficiaries": row[2],
            "pending": {
                "visits": row[3],
                "beneficiaries": row[4],
                "oldest_days": 0 if row[3] else None,
            },
        }

    return {
        "total": figures([sum(r[i] for r in per_caravan.values()) for i in range(5)]),
        "caravans": {c: figures(r) for c, r in per_caravan.items()},
        "counties": {c: figures(r) for c, r in per_county.items()},
    }


async def test_caravan_kpis_equal_a_recount_of_the_trips(ctx, year):
    """Trips logged on several caravans and their visits confirmed by the sites, one visit twice
    at the same moment and one not at all: the KPIs, read from the roll-ups, are what the raw
    trips give, for the province, a city and a county, before and after the confirmations."""
    today = ctx.clock.local_now().date()
    site_admin = await ctx.db["users"].find_one({"openid": "seed_2026_1"})
    fleet = await ctx.db["caravans"].find().sort([("_id", 1)]).to_list(None)
    assert len(fleet) >= 3
    logged = []
    for n, caravan in enumerate(fleet[:3]):
        pair = await ctx.db["sites"].find({"org_id": caravan["org_id"]}).to_list(2)
        requests = []
        for site in pair:
            await sites.add_admin(ctx, site["_id"], site_admin["_id"])
            requests.append(
                await caravans.create_request(
                    ctx,
                    caravans.NewVisitRequest(
                        site_id=str(site["_id"]),
                        earliest_date=today,
                        latest_date=today,
                        duration_min=60,
                    ),
                )
            )
        trip = await caravans.log_trip(
            ctx,
            caravans.NewTrip(
                caravan_id=str(caravan["_id"]),
                date=today,
                odometer_start_km=700_000,
                odometer_end_km=700_040.5 + 10 * n,
                visits=[
                    caravans.TripVisitIn(request_id=str(r), beneficiaries=150 + 25 * i + n)
                    for i, r in enumerate(requests)
                ],
            ),
            logged_by=site_admin["_id"],
        )
        logged.append((trip, requests))
    county = fleet[0]["org_id"]
    city = (await ctx.db["orgs"].find_one({"_id": county}))["parent_id"]
    scopes = [(await orgs.root_org(ctx))["_id"], city, county]

    async def assert_kpis_match() -> caravan_kpis.Kpis:
        for org_id in scopes:
            kpis = msgspec.to_builtins(await caravan_kpis.kpis(ctx, today.year, str(org_id)))
            expected = await plain_kpis(ctx, org_id, today.year)
            assert kpis["total"] == expected["total"]
            assert [c["caravan_id"] for c in kpis["caravans"]] == sorted(expected["caravans"])
            assert {
                c.pop("caravan_id"): {k: c[k] for k in KPI_FIELDS} for c in kpis["caravans"]
            } == expected["caravans"]
            assert {
                c.pop("org_id"): {k: c[k] for k in KPI_FIELDS} for c in kpis["counties"]
            } == expected["counties"]
        return await caravan_kpis.kpis(ctx, today.year, str(county))

    before = await assert_kpis_match()
    by = site_admin["_id"]
    twice_trip, (twice, _) = logged[0]
    # One visit confirmed twice at once: its people and its 活动次数 count once.
    await asyncio.gather(*(caravans.confirm_visit(ctx, twice_trip, twice, by=by) for _ in range(2)))
    for trip, requests in logged[1:]:
        for request in requests:
            await caravans.confirm_visit(ctx, trip, request, by=by)
    after = await assert_kpis_match()
    # The county's caravan: one visit of its two confirmed, its km counted before either was.
    assert after.total.activities == before.total.activities + 1
    assert after.total.beneficiaries == before.total.beneficiaries + 150
    assert after.total.km == before.total.km
    # The county's unconfirmed visit still waits beside the confirmed one.
    assert after.total.pending.visits == before.total.pending.visits - 1 == 1
    assert await stats.reconcile(ctx, today.year, repair=False) == dict.fromkeys(
        (stats.ORGS, stats.VOLUNTEERS, stats.SITES, stats.PROJECTS), 0
    )


async def test_the_nightly_job_repairs_a_drifted_rollup(ctx, http, admin, year, capsys, caplog):
    good = await _report(http, admin, year=YEAR)
    root = await orgs.root_org(ctx)
    await ctx.db[stats.ORGS].update_one(
        {"_id": f"{root['_id']}:{YEAR}"}, {"$inc": {"totals.hours": 40, "totals.activities": 3}}
    )
    await ctx.db[stats.VOLUNTEERS].delete_one({"year": YEAR, "org_id": root["_id"]})
    drifted = await _report(http, admin, year=YEAR)
    assert drifted["volunteer"]["hours"] == pytest.approx(good["volunteer"]["hours"] + 40)
    assert await stats.reconcile(ctx, YEAR, repair=False) == {
        stats.ORGS: 1,
        stats.VOLUNTEERS: 1,
        stats.SITES: 0,
        stats.PROJECTS: 0,
    }
    capsys.readouterr()
    caplog.clear()
    await Scheduler(ctx).daily()
    # structlog prints, or goes through logging once another test has configured it so
    assert "stats_rollup_mismatch" in capsys.readouterr().out + caplog.text
    assert await _report(http, admin, year=YEAR) == good
    assert sum((await stats.reconcile(ctx, YEAR)).values()) == 0


async def test_workbook_and_csv_totals_equal_the_json(ctx, http, admin, year):
    report = await _report(http, admin, year=YEAR)
    answer = await http.get(
        "/api/v1/stats/annual", params={"year": YEAR, "format": "xlsx"}, headers=admin.headers
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/vnd.openxmlformats")
    book = openpyxl.load_workbook(io.BytesIO(answer.content))
    assert book.sheetnames == [
        "总览",
        "按月",
        "按县",
        "十佳志愿者",
        "十佳队伍",
        "十佳站点",
        "十佳项目",
    ]
    summary = {row[0]: row[1] for row in book["总览"].iter_rows(min_row=2, values_only=True)}
    assert summary["志愿服务时长"] == pytest.approx(report["volunteer"]["hours"])
    assert summary["科普活动"] == report["volunteer"]["activities"]
    assert summary["大篷车行驶里程(km)"] == pytest.approx(report["caravan"]["km"])
    months = list(book["按月"].iter_rows(min_row=2, values_only=True))
    assert len(months) == 13 and months[-1][0] == "合计"
    assert months[-1][1] == report["volunteer"]["activities"]
    assert months[-1][3] == pytest.approx(report["volunteer"]["hours"], abs=0.01)
    assert months[-1][5] == pytest.approx(report["caravan"]["km"], abs=0.1)
    counties = list(book["按县"].iter_rows(min_row=2, values_only=True))
    assert counties[-1][2] == report["volunteer"]["activities"]
    assert book["按县"].column_dimensions["A"].width > 8
    top = list(book["十佳志愿者"].iter_rows(min_row=2, values_only=True))
    assert [row[3] for row in top] == [t["hours"] for t in report["top_volunteers"]]

    answer = await http.get(
        "/api/v1/stats/annual",
        params={"year": YEAR, "format": "csv", "table": "months"},
        headers=admin.headers,
    )
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert rows[0][0] == "月份" and rows[-1][0] == "合计"
    assert float(rows[-1][3]) == pytest.approx(report["volunteer"]["hours"], abs=0.01)


async def test_bad_requests_are_refused_clearly(ctx, http, admin, year):
    for params, field in [
        ({"year": 1800}, "year"),
        ({"from": "2026-05-01", "to": "2026-04-01"}, "to"),
        ({"from": "2026-13-01"}, "from"),
        ({"format": "pdf"}, "format"),
        ({"format": "csv", "table": "nope"}, "table"),
    ]:
        answer = await http.get("/api/v1/stats/annual", params=params, headers=admin.headers)
        assert answer.status_code == 400, (params, answer.text)
        assert answer.json()["error"]["code"] == "invalid_request"
        assert field in answer.text
    answer = await http.get(
        "/api/v1/stats/annual", params={"org_id": str(ObjectId())}, headers=admin.headers
    )
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == "not_found"


async def test_reach_needs_a_started_activity(ctx, year):
    team = await ctx.db["orgs"].find_one({"kind": "team"})
    start = ctx.clock.now() + timedelta(days=1)
    upcoming = await _published(ctx, team, "明日活动", start)
    with pytest.raises(Conflict, match="受益人次"):
        await activities.report_reach(ctx, upcoming, activities.Reach(beneficiaries=10))


async def _book_above_the_counties(ctx, city: dict, root: ObjectId, staff: ObjectId) -> None:
    """Hours credited to the city's and the province's own work, an activity of the city and
    a trip of a caravan the city keeps."""
    site_admin = await ctx.db["users"].find_one({"openid": "seed_2026_1"})
    past = await ctx.db["activities"].find_one({"status": "finished"})
    people = [u["_id"] for u in await ctx.db["users"].find().limit(6).to_list(None)]
    credits = [
        await hours.credit(
            ctx,
            user_id=p,
            hours=1.25 + n / 3,
            org_id=city["_id"] if n % 2 else root,
            source="activity",
            activity_id=ObjectId(),
            site_id=None,
            served_at=past["starts_at"],
        )
        for n, p in enumerate(people)
    ]
    await hours.confirm(ctx, staff, [str(c) for c in credits])
    await _published(ctx, city, "市科协活动", ctx.clock.now() + timedelta(days=1))
    site = await ctx.db["sites"].find_one({})
    lng, lat = site["location"]["coordinates"]
    depot = await caravans.create_depot(
        ctx,
        caravans.NewDepot(
            name="市车场", org_id=str(city["_id"]), location=sites.LocationIn(lng=lng, lat=lat)
        ),
    )
    caravan = await caravans.create_caravan(
        ctx,
        caravans.NewCaravan(
            name="市科普大篷车",
            plate="豫A9C001",
            vehicle_type="II",
            depot_id=str(depot),
            org_id=str(city["_id"]),
        ),
    )
    await caravans.log_trip(
        ctx,
        caravans.NewTrip(
            caravan_id=str(caravan),
            date=ctx.clock.local_now().date(),
            odometer_start_km=100,
            odometer_end_km=233.3,
            visits=[],
        ),
        logged_by=site_admin["_id"],
    )


def _sheet_rows(book, name: str) -> tuple[list[tuple], tuple]:
    rows = list(book[name].iter_rows(min_row=2, values_only=True))
    assert rows[-1][0] == "合计"
    return rows[:-1], rows[-1]


async def test_every_table_adds_up_to_the_overview(ctx, http, admin, year):
    """Facts booked at the province's and cities' own level as well as in the counties: the
    months and the counties (with the row above them) add up to the overview, in the JSON, the
    workbook and the CSV, for the province and for a city."""
    root = (await orgs.root_org(ctx))["_id"]
    city = await ctx.db["orgs"].find_one({"kind": "city"})
    await _book_above_the_counties(ctx, city, root, ObjectId(admin.user_id))
    for org_id, above_name in ((root, "市直/省直"), (city["_id"], "市直")):
        report = await _report(http, admin, year=YEAR, org_id=str(org_id))
        overview = {
            "activities": report["volunteer"]["activities"],
            "beneficiaries": report["volunteer"]["beneficiaries"],
            "hours": report["volunteer"]["hours"],
            "caravan_activities": report["caravan"]["activities"],
            "km": report["caravan"]["km"],
            "caravan_beneficiaries": report["caravan"]["beneficiaries"],
        }
        above = report["above_counties"]
        assert above["name"] == above_name
        assert above["hours"] > 0 and above["km"] == pytest.approx(133.3)
        assert above["activities"] == 1
        assert all(c["hours"] > 0 for c in report["counties"])
        for rows in (report["months"], [*report["counties"], above]):
            for figure, total in overview.items():
                assert sum(r[figure] for r in rows) == pytest.approx(total, abs=1e-6), figure

        answer = await http.get(
            "/api/v1/stats/annual",
            params={"year": YEAR, "org_id": str(org_id), "format": "xlsx"},
            headers=admin.headers,
        )
        book = openpyxl.load_workbook(io.BytesIO(answer.content))
        summary = {row[0]: row[1] for row in book["总览"].iter_rows(min_row=2, values_only=True)}
        wanted = [
            summary["科普活动"],
            summary["受益人次"],
            summary["志愿服务时长"],
            summary["大篷车活动次数"],
            summary["大篷车行驶里程(km)"],
            summary["大篷车受益人次"],
        ]
        assert wanted == pytest.approx(list(overview.values()))
        months, months_total = _sheet_rows(book, "按月")
        counties, counties_total = _sheet_rows(book, "按县")
        assert counties[-1][0] == above_name
        assert counties_total[1] == summary["参与志愿者"]
        for rows, total, first in ((months, months_total, 1), (counties, counties_total, 2)):
            for i, want in enumerate(wanted):
                column = [row[first + i] for row in rows]
                assert sum(column) == pytest.approx(want, abs=1e-6), (rows[0][0], i)
                assert total[first + i] == pytest.approx(want, abs=1e-6)

        answer = await http.get(
            "/api/v1/stats/annual",
            params={"year": YEAR, "org_id": str(org_id), "format": "csv", "table": "counties"},
            headers=admin.headers,
        )
        rows = list(csv.reader(io.StringIO(answer.content.decode("utf-8-sig"))))[1:]
        assert rows[-2][0] == above_name and rows[-1][0] == "合计"
        assert sum(float(r[4]) for r in rows[:-1]) == pytest.approx(overview["hours"], abs=1e-6)
