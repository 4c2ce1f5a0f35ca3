"""An organiser corrects an activity: the text, tags and deadline at any time before it ends,
the times only while it is a draft; the mini-program's listing shows the change."""

from __future__ import annotations

from datetime import timedelta

from bson import ObjectId

from server.domain import access, orgs, sites


async def test_an_organiser_edits_a_draft_then_the_published_activity(ctx, http, login):
    root = await orgs.create_org(ctx, "省科协", "province", None)
    city = await orgs.create_org(ctx, "新乡市科协", "city", root)
    county = await orgs.create_org(ctx, "辉县市科协", "county", city)
    organiser = await login("o_editor")
    await access.grant_role(ctx, ObjectId(organiser.user_id), "team_leader", county)
    site = await sites.create_site(
        ctx,
        sites.NewSite(
            name="城关小学",
            kind="school",
            org_id=str(county),
            location=sites.LocationIn(lng=113.806, lat=35.462),
        ),
    )
    starts = ctx.clock.now() + timedelta(days=3)
    body = {
        "title": "科学实验秀",
        "description": "小学科学实验",
        "org_id": str(county),
        "site_id": str(site),
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=2)).isoformat(),
        "capacity": 20,
    }
    created = await http.post("/api/v1/activities", json=body, headers=organiser.headers)
    assert created.status_code == 201, created.text
    path = f"/api/v1/activities/{created.json()['id']}"

    async def patch(change: dict, status: int = 200) -> dict:
        answer = await http.patch(path, json=change, headers=organiser.headers)
        assert answer.status_code == status, answer.text
        return answer.json()

    later = starts + timedelta(days=1)
    moved = await patch(
        {"starts_at": later.isoformat(), "ends_at": (later + timedelta(hours=3)).isoformat()}
    )
    assert moved["starts_at"].startswith(later.isoformat()[:16])
    assert (
        moved["signup_deadline"]
        == (await http.get(path, headers=organiser.headers)).json()["signup_deadline"]
    )
    backwards = await patch({"ends_at": later.isoformat()}, 400)
    assert backwards["error"]["field"] == "ends_at"
    assert (await patch({"checkin": "anywhere"}, 400))["error"]["code"] == "invalid_request"

    published = await http.post(f"{path}/publish", headers=organiser.headers)
    assert published.status_code == 200, published.text
    renamed = await patch({"title": "  科学实验秀（加场） ", "tags": ["科学", "科学", "实验"]})
    assert (renamed["title"], renamed["tags"]) == ("科学实验秀（加场）", ["科学", "实验"])
    listed = await http.get("/mp/v1/activities", headers=organiser.headers)
    assert [a["title"] for a in listed.json()["items"]] == ["科学实验秀（加场）"]

    frozen = await patch({"starts_at": starts.isoformat()}, 409)
    assert (frozen["error"]["code"], frozen["error"]["field"]) == ("invalid_state", "starts_at")
    cancelled = await http.post(f"{path}/cancel", json={}, headers=organiser.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert (await patch({"title": "又改"}, 409))["error"]["code"] == "invalid_state"

    stranger = await login("o_stranger")
    refused = await http.patch(path, json={"title": "x"}, headers=stranger.headers)
    assert refused.status_code == 403, refused.text
