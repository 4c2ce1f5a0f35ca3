"""百名首席科普专家进百县 through the HTTP API: the association registers experts, a county posts
expert requests, the association proposes a match, swaps an expert (refused with the reason
when the expert cannot take the request) and publishes; each visit is an activity and its expert
gets the subscribe message at the WeChat emulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import pytest
from bson import ObjectId

from server.domain import access, identity, notifications, orgs

TEMPLATE = "tmpl_expert_visit"
HUIXIAN = {"lng": 113.806, "lat": 35.462}
NEAR_ZHENGZHOU = {"lng": 113.70, "lat": 34.85}


@pytest.fixture
def settings_overrides():
    return {"expert_visits_per_month": 2, "access_token_ttl_s": 60 * 86400}


@dataclass
class Scene:
    admin: object  # org_admin of the province
    county_admin: object
    county: str
    city: str
    days: list[str]  # D1, D2, D3: the 5th to 7th of next month
    experts: dict[str, str] = field(default_factory=dict)  # name → expert id
    sessions: dict[str, object] = field(default_factory=dict)  # name → the expert's session
    requests: dict[str, str] = field(default_factory=dict)  # R1… → request id


@pytest.fixture
async def scene(ctx, http, login):
    root = await orgs.create_org(ctx, "河南省科协", "province", None, adcode="410000")
    xinxiang = await orgs.create_org(ctx, "新乡市科协", "city", root, adcode="410700")
    zhengzhou = await orgs.create_org(ctx, "郑州市科协", "city", root, adcode="410100")
    county = await orgs.create_org(ctx, "辉县市科协", "county", xinxiang, adcode="410782")
    admin, county_admin = await login(), await login()
    await access.grant_role(ctx, ObjectId(admin.user_id), "org_admin", root)
    await access.grant_role(ctx, ObjectId(county_admin.user_id), "org_admin", county)
    today = ctx.clock.local_now().date()
    first = date(today.year + today.month // 12, today.month % 12 + 1, 1)
    days = [(first + timedelta(days=4 + i)).isoformat() for i in range(3)]
    s = Scene(admin, county_admin, str(county), str(xinxiang), days)
    d1, d2, d3 = days
    for name, fields, city, free in (
        ("张农", ["农业", "生态环境"], xinxiang, [d1, d2, d3]),
        ("李医", ["医疗卫生"], zhengzhou, [d1]),
        ("王农", ["农业"], zhengzhou, [d1, d3]),
        ("赵应", ["农业", "应急"], xinxiang, []),
    ):
        session = await login()
        body = {"user_id": session.user_id, "name": name, "fields": fields,
                "home_city_id": str(city), "free_dates": free}  # fmt: skip
        created = await http.post("/api/v1/experts", json=body, headers=admin.headers)
        assert created.status_code == 201, created.text
        s.experts[name], s.sessions[name] = created.json()["id"], session
    for key, fields, dates, place in (
        ("R1", ["农业", "生态环境"], [d1], HUIXIAN),
        ("R2", ["医疗卫生"], [d1, d2], HUIXIAN),
        ("R3", ["农业"], [d1], HUIXIAN),
        ("R4", ["航空航天"], [d2], HUIXIAN),
        ("R5", ["农业"], [d2], HUIXIAN),
        ("R6", ["农业"], [d3], NEAR_ZHENGZHOU),
    ):
        s.requests[key] = await _post_request(http, s, fields=fields, dates=dates, location=place)
    return s


async def _post_request(http, s: Scene, **fields) -> str:
    body = {"org_id": s.county, "audience": "种植户", "place": "辉县市科技馆",
            "location": HUIXIAN, "audience_size": 80, **fields}  # fmt: skip
    created = await http.post("/api/v1/expert-requests", json=body, headers=s.county_admin.headers)
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def _propose(http, s: Scene) -> dict:
    body = {"from": s.days[0], "to": s.days[-1]}
    proposed = await http.post("/api/v1/expert-matches", json=body, headers=s.admin.headers)
    assert proposed.status_code == 201, proposed.text
    return proposed.json()


def _plan(s: Scene, match: dict) -> dict[str, tuple[str, str]]:
    """request key → (expert name, date)."""
    request_key = {v: k for k, v in s.requests.items()}
    expert_name = {v: k for k, v in s.experts.items()}
    return {
        request_key[a["request_id"]]: (expert_name[a["expert_id"]], a["date"])
        for a in match["assignments"]
    }


async def _accept(ctx, http, emulator, session, times: int) -> None:
    openid = await identity.openid_of(ctx, ObjectId(session.user_id))
    accepted = {"openid": openid, "accepted": [TEMPLATE] * times}
    await emulator.post("/__emulator__/subscriptions", accepted)
    accepted = await http.post(
        "/mp/v1/me/subscriptions", json={"accepted": [TEMPLATE] * times}, headers=session.headers
    )
    assert accepted.status_code == 200, accepted.text


async def test_propose_swap_publish(ctx, http, emulator, scene):
    s = scene
    d1, d2, d3 = s.days
    # 赵应 sets their own free dates in the mini-program.
    mine = await http.put("/mp/v1/me/expert/free-dates", json={"dates": [d3]},
                          headers=s.sessions["赵应"].headers)  # fmt: skip
    assert mine.status_code == 200 and mine.json()["free_dates"] == [d3], mine.text

    match = await _propose(http, s)
    assert _plan(s, match) == {
        "R1": ("张农", d1),  # both fields covered
        "R2": ("李医", d1),
        "R3": ("王农", d1),  # 张农 is at R1 that day
        "R5": ("张农", d2),
        "R6": ("王农", d3),  # from 郑州, nearer than 新乡
    }
    assert (match["status"], match["matched"], match["fit"]) == ("proposed", 5, 6)
    [unmatched] = match["unmatched"]
    assert (unmatched["request_id"], unmatched["reason"]) == (
        s.requests["R4"],
        "no_expert_in_field",
    )

    swap = f"/api/v1/expert-matches/{match['id']}/swap"

    async def refused(request, expert, status, code, **extra):
        body = {"request_id": s.requests[request], "expert_id": s.experts[expert], **extra}
        answer = await http.post(swap, json=body, headers=s.admin.headers)
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["code"] == code, answer.text
        return answer.json()["error"]["message"]

    assert "每月上限" in await refused("R6", "张农", 409, "monthly_limit")  # R1 and R5 already
    assert await refused("R3", "李医", 409, "field_mismatch") == "该专家的领域与需求不符"
    assert await refused("R2", "李医", 409, "expert_unavailable", date=d2) == "该专家当天没有空"
    assert await refused("R3", "张农", 409, "expert_busy")
    await refused("R3", "王农", 400, "invalid_request", date=d2)  # not a date R3 prefers
    unchanged = (await http.get(f"/api/v1/expert-matches/{match['id']}",
                                headers=s.admin.headers)).json()  # fmt: skip
    assert _plan(s, unchanged) == _plan(s, match)

    swapped = await http.post(
        swap,
        json={"request_id": s.requests["R6"], "expert_id": s.experts["赵应"]},
        headers=s.admin.headers,
    )
    assert swapped.status_code == 200, swapped.text
    assert _plan(s, swapped.json())["R6"] == ("赵应", d3)

    await _accept(ctx, http, emulator, s.sessions["张农"], 2)
    await _accept(ctx, http, emulator, s.sessions["赵应"], 1)
    publish = f"/api/v1/expert-matches/{match['id']}/publish"
    published = await http.post(publish, headers=s.admin.headers)
    assert published.status_code == 200, published.text
    body = published.json()
    assert body["status"] == "published" and body["skipped"] == []
    visits = {p["request_id"]: p["activity_id"] for p in body["published"]}
    assert set(visits) == {s.requests[k] for k in ("R1", "R2", "R3", "R5", "R6")}
    again = await http.post(publish, headers=s.admin.headers)
    assert again.status_code == 200 and again.json()["published"] == body["published"]

    activity = await http.get(f"/api/v1/activities/{visits[s.requests['R6']]}",
                              headers=s.admin.headers)  # fmt: skip
    assert activity.status_code == 200, activity.text
    activity = activity.json()
    assert (activity["status"], activity["org_id"], activity["capacity"]) == (
        "published", s.county, 80
    )  # fmt: skip
    assert "首席专家进县" in activity["tags"] and "赵应" in activity["description"]
    assert activity["starts_at"].startswith(f"{d3}T01:00:00")  # 09:00 in Shanghai

    await notifications.dispatch_due(ctx)
    for name, count in (("张农", 2), ("赵应", 1)):
        openid = await identity.openid_of(ctx, ObjectId(s.sessions[name].user_id))
        messages = [m for m in emulator.messages(openid) if m["template_id"] == TEMPLATE]
        assert len(messages) == count, (name, emulator.messages(openid))
    [message] = [m for m in emulator.messages() if m["page"].endswith(visits[s.requests["R6"]])]
    assert message["data"]["thing3"]["value"] == "辉县市科技馆"

    scheduled = await http.get(f"/api/v1/expert-requests?org_id={s.county}&status=scheduled",
                               headers=s.county_admin.headers)  # fmt: skip
    assert {r["id"] for r in scheduled.json()["items"]} == set(visits)
    # Published visits are taken: a new proposal has only R4 to consider, and nobody for it.
    later = await _propose(http, s)
    assert later["assignments"] == [] and [u["request_id"] for u in later["unmatched"]] == [
        s.requests["R4"]
    ]
    late_swap = {"request_id": s.requests["R6"], "expert_id": s.experts["王农"]}
    after = await http.post(swap, json=late_swap, headers=s.admin.headers)
    assert after.status_code == 409 and after.json()["error"]["code"] == "match_published"


async def test_published_visits_count_in_the_next_match(ctx, http, scene):
    """An expert's published visits hold in the next match: their days are no longer free and
    the monthly limit counts them."""
    s = scene
    d1, _, d3 = s.days
    first = await _propose(http, s)
    publish = f"/api/v1/expert-matches/{first['id']}/publish"
    assert (await http.post(publish, headers=s.admin.headers)).status_code == 200
    late = await _post_request(http, s, fields=["农业", "生态环境"], dates=[d1, d3])
    match = await _propose(http, s)
    # 张农 has made two visits this month (the limit); 王农 is out on D1 and D3; 赵应 is not free.
    assert match["assignments"] == []
    assert {u["request_id"]: u["reason"] for u in match["unmatched"]} == {
        late: "monthly_limit",
        s.requests["R4"]: "no_expert_in_field",
    }
    free = await http.put(f"/api/v1/experts/{s.experts['赵应']}/free-dates",
                          json={"dates": [d3]}, headers=s.admin.headers)  # fmt: skip
    assert free.status_code == 200, free.text
    match = await _propose(http, s)
    chosen = [(a["request_id"], a["expert_id"], a["date"]) for a in match["assignments"]]
    assert chosen == [(late, s.experts["赵应"], d3)]


async def test_bad_input_is_refused_and_changes_nothing(ctx, http, login, scene):
    s = scene
    before = await ctx.db.expert_requests.count_documents({})
    today = ctx.clock.local_now().date().isoformat()
    base = {"org_id": s.county, "fields": ["农业"], "dates": [s.days[0]], "audience": "村民",
            "place": "村委会", "location": HUIXIAN}  # fmt: skip
    for change, status, where in (
        ({"dates": [today]}, 400, "dates[0]"),
        ({"fields": ["炼金术"]}, 400, "fields[0]"),
        ({"org_id": s.city}, 400, "org_id"),  # the province's admin, for a city
        ({"start_time": "25:00"}, 400, "start_time"),
        ({"audience": "  "}, 400, "audience"),
    ):
        caller = s.admin if "org_id" in change else s.county_admin
        answer = await http.post("/api/v1/expert-requests", json={**base, **change},
                                 headers=caller.headers)  # fmt: skip
        assert answer.status_code == status, (change, answer.text)
        assert answer.json()["error"]["field"] == where, answer.text
    assert await ctx.db.expert_requests.count_documents({}) == before

    # Another county's admin posts nothing here, and only the association registers experts.
    other = await login()
    other_county = await orgs.create_org(ctx, "林州市科协", "county", ObjectId(s.city))
    await access.grant_role(ctx, ObjectId(other.user_id), "org_admin", other_county)
    foreign = await http.post("/api/v1/expert-requests", json=base, headers=other.headers)
    assert foreign.status_code == 403
    listing = await http.get("/api/v1/experts", headers=s.county_admin.headers)
    assert listing.status_code == 403
    period = {"from": s.days[0], "to": s.days[2]}
    proposing = await http.post(
        "/api/v1/expert-matches", json=period, headers=s.county_admin.headers
    )
    assert proposing.status_code == 403

    again = {"user_id": s.sessions["张农"].user_id, "fields": ["农业"], "home_city_id": s.city}
    twice = await http.post("/api/v1/experts", json=again, headers=s.admin.headers)
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "already_expert"
    volunteer = await login()
    county_home = {**again, "user_id": volunteer.user_id, "name": "某", "home_city_id": s.county}
    refused = await http.post("/api/v1/experts", json=county_home, headers=s.admin.headers)
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "home_city_id"
    nameless = {**again, "user_id": volunteer.user_id}
    refused = await http.post("/api/v1/experts", json=nameless, headers=s.admin.headers)
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "name"
    assert (await http.get("/mp/v1/me/expert", headers=volunteer.headers)).status_code == 404

    far = (date.fromisoformat(s.days[0]) + timedelta(days=100)).isoformat()
    long = {"from": s.days[0], "to": far}
    too_long = await http.post("/api/v1/expert-matches", json=long, headers=s.admin.headers)
    assert too_long.status_code == 400 and too_long.json()["error"]["field"] == "to"
    assert await ctx.db.expert_matches.count_documents({}) == 0

    page = await http.get("/api/v1/experts?field=农业&limit=1", headers=s.admin.headers)
    assert page.status_code == 200 and len(page.json()["items"]) == 1
    cursor = page.json()["next_cursor"]
    following = await http.get(
        f"/api/v1/experts?field=农业&limit=5&cursor={cursor}", headers=s.admin.headers
    )
    assert len(following.json()["items"]) == 2  # 张农, then 王农 and 赵应
    forged = await http.get("/api/v1/experts?cursor=bm9wZQ", headers=s.admin.headers)
    assert forged.status_code == 400 and forged.json()["error"]["field"] == "cursor"
