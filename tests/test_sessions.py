"""Sessions end when they should: signing out ends the access token at once, refresh tokens
rotate, and a retired refresh token replayed later ends the whole session."""

from __future__ import annotations

from server.domain import identity


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
