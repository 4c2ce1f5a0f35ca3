"""Sessions end when they should: signing out ends the access token at once, refresh tokens
rotate, and a retired refresh token replayed later ends the whole session."""

from __future__ import annotations

from bson import ObjectId

from server.domain import access, identity, orgs


async def _sign_in(http, emulator, openid: str) -> dict:
    code = await emulator.jscode(openid)
    answer = await http.post("/mp/v1/auth/login", json={"code": code})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _bearer(session: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['token']}"}


async def test_signing_out_ends_the_access_token_at_once(http, emulator):
    phone, tablet = await _sign_in(http, emulator, "o_out"), await _sign_in(http, emulator, "o_out")
    assert (await http.get("/mp/v1/me", headers=_bearer(phone))).status_code == 200
    out = await http.post(
        "/mp/v1/auth/logout", json={"refresh_token": phone["refresh_token"]}, headers=_bearer(phone)
    )
    assert out.status_code == 200 and out.json()["revoked"] == 1
    after = await http.get("/mp/v1/me", headers=_bearer(phone))
    assert after.status_code == 401 and after.json()["error"]["code"] == "unauthenticated"
    refused = await http.post("/mp/v1/auth/refresh", json={"refresh_token": phone["refresh_token"]})
    assert refused.status_code == 401
    assert (await http.get("/mp/v1/me", headers=_bearer(tablet))).status_code == 200
    everywhere = await http.post("/mp/v1/auth/logout", json={}, headers=_bearer(tablet))
    assert everywhere.json()["revoked"] == 1
    assert (await http.get("/mp/v1/me", headers=_bearer(tablet))).status_code == 401


async def test_a_sign_out_elsewhere_is_seen_within_seconds(ctx, http, emulator):
    session = await _sign_in(http, emulator, "o_far")
    assert (await http.get("/mp/v1/me", headers=_bearer(session))).status_code == 200
    # Another process signs the session out: this one's cache holds it for ttl_s at most.
    await ctx.db.sessions.update_many({}, {"$set": {"revoked_at": ctx.clock.now()}})
    ctx.clock.advance(ctx.sessions.ttl_s + 0.1)
    assert (await http.get("/mp/v1/me", headers=_bearer(session))).status_code == 401


async def test_refresh_tokens_rotate_and_a_replay_ends_the_session(ctx, http, emulator):
    first = await _sign_in(http, emulator, "o_rot")
    old = first["refresh_token"]
    second = (await http.post("/mp/v1/auth/refresh", json={"refresh_token": old})).json()
    assert second["refresh_token"] != old
    # The answer was lost on a weak signal and the phone asks again: the same new pair's token.
    retry = (await http.post("/mp/v1/auth/refresh", json={"refresh_token": old})).json()
    assert retry["refresh_token"] == second["refresh_token"]
    third = await http.post("/mp/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert third.status_code == 200
    # Much later the retired token comes back: a stolen copy. The whole session ends.
    ctx.clock.advance(identity.REFRESH_GRACE_S + 1)
    replay = await http.post("/mp/v1/auth/refresh", json={"refresh_token": old})
    assert replay.status_code == 401
    newest = third.json()
    refused = await http.post(
        "/mp/v1/auth/refresh", json={"refresh_token": newest["refresh_token"]}
    )
    assert refused.status_code == 401
    assert (await http.get("/mp/v1/me", headers=_bearer(newest))).status_code == 401


async def test_an_admin_disabling_a_user_ends_their_sessions_at_once(ctx, http, emulator, login):
    root = await orgs.create_org(ctx, "省科协", "province", None)
    admin = await login("o_disabler")
    await access.grant_role(ctx, ObjectId(admin.user_id), "org_admin", root)
    phone, tablet = await _sign_in(http, emulator, "o_bad"), await _sign_in(http, emulator, "o_bad")
    assert (await http.get("/mp/v1/me", headers=_bearer(phone))).status_code == 200
    user_id = phone["user"]["id"]
    path = f"/api/v1/users/{user_id}"
    refused = await http.post(f"{path}/disable", headers=_bearer(tablet))
    assert refused.status_code == 403  # not everyone may
    disabled = await http.post(f"{path}/disable", headers=admin.headers)
    assert disabled.status_code == 200, disabled.text
    assert disabled.json() == {"user_id": user_id, "disabled": True, "sessions_ended": 2}
    for session in (phone, tablet):
        assert (await http.get("/mp/v1/me", headers=_bearer(session))).status_code == 401
        again = await http.post(
            "/mp/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}
        )
        assert again.status_code in (401, 403)
    code = await emulator.jscode("o_bad")
    login_refused = await http.post("/mp/v1/auth/login", json={"code": code})
    assert login_refused.status_code == 403
    error = login_refused.json()["error"]
    assert error["code"] == "forbidden" and "停用" in error["message"]
    assert (
        await ctx.db.sessions.count_documents({"revoked_at": None, "user_id": ObjectId(user_id)})
        == 0
    )
    missing = await http.post(f"/api/v1/users/{'0' * 24}/disable", headers=admin.headers)
    assert missing.status_code == 404
    enabled = await http.post(f"{path}/enable", headers=admin.headers)
    assert enabled.json() == {"user_id": user_id, "disabled": False, "sessions_ended": 0}
    back = await _sign_in(http, emulator, "o_bad")
    assert (await http.get("/mp/v1/me", headers=_bearer(back))).status_code == 200
