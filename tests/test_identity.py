"""Sign-in with WeChat, tokens, phone binding, profiles, bootstrap admin, rate limits."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from server.logs import configure_logging
from server.wechat.token_keeper import TokenKeeper


async def _login(http, emulator, openid, unionid=None):
    code = await emulator.jscode(openid, unionid)
    return await http.post("/mp/v1/auth/login", json={"code": code})


async def test_a_new_user_signs_in_and_returns_as_the_same_user(ctx, http, emulator):
    first = await _login(http, emulator, "o_new", "u_1")
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"token", "refresh_token", "expires_in", "user"}
    assert body["expires_in"] == 7200
    assert body["user"]["roles"] == [{"role": "volunteer", "org_id": None}]
    assert body["user"]["phone_bound"] is False
    assert "session_key" not in first.text

    again = await _login(http, emulator, "o_new")
    assert again.json()["user"]["id"] == body["user"]["id"]
    assert await ctx.db.users.count_documents({}) == 1
    stored = await ctx.db.users.find_one({})
    assert stored["unionid"] == "u_1"
    # The session key is kept, encrypted: never in the clear.
    session_key = ctx.crypto.decrypt(stored["session_key"], "session_key")
    assert session_key and session_key not in json.dumps(stored, default=str)

    me = await http.get("/mp/v1/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == body["user"]["id"]


async def test_login_does_not_fetch_an_access_token(ctx, http, emulator):
    await _login(http, emulator, "o_tokenless")
    assert emulator.state.stats()["token_issues"] == 0


@pytest.mark.parametrize("reuse", [False, True])
async def test_invalid_and_used_codes_are_refused_clearly(ctx, http, emulator, reuse):
    if reuse:
        code = await emulator.jscode("o_reuse")
        assert (await http.post("/mp/v1/auth/login", json={"code": code})).status_code == 200
        expected = "code_used"
    else:
        code, expected = "not-a-real-code", "invalid_code"
    response = await http.post("/mp/v1/auth/login", json={"code": code})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == expected
    assert response.json()["error"]["field"] == "code"


async def test_an_expired_code_is_refused(ctx, http, emulator):
    code = await emulator.jscode("o_slow")
    emulator.state.advance(6 * 60)
    response = await http.post("/mp/v1/auth/login", json={"code": code})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_code"
    assert await ctx.db.users.count_documents({}) == 0


@pytest.mark.parametrize(
    "fault", [{"errcode": -1}, {"delay_ms": 3000}], ids=["system_error", "timeout"]
)
async def test_wechat_failures_are_wechat_error_and_write_nothing(ctx, http, emulator, fault):
    code = await emulator.jscode("o_unlucky")
    await emulator.fault("jscode2session", **fault)
    response = await http.post("/mp/v1/auth/login", json={"code": code})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "wechat_error"
    assert await ctx.db.users.count_documents({}) == 0
    assert await ctx.db.refresh_tokens.count_documents({}) == 0


async def test_bad_bodies_name_the_field(http):
    response = await http.post("/mp/v1/auth/login", json={"code": 5})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_request",
        "message": "字段 code: Expected `str`, got `int`",
        "field": "code",
    }
    assert (await http.post("/mp/v1/auth/login", content=b"{nope")).status_code == 400
    unknown = await http.post("/mp/v1/auth/login", json={"code": "x", "extra": 1})
    assert unknown.json()["error"]["field"] == "extra"


async def test_refresh_and_sign_out(ctx, http, emulator):
    session = (await _login(http, emulator, "o_refresh")).json()
    refreshed = await http.post(
        "/mp/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}
    )
    assert refreshed.status_code == 200
    assert refreshed.json()["user"]["id"] == session["user"]["id"]
    # A retry after a lost answer still works.
    again = await http.post("/mp/v1/auth/refresh", json={"refresh_token": session["refresh_token"]})
    assert again.status_code == 200

    headers = {"Authorization": f"Bearer {session['token']}"}
    out = await http.post(
        "/mp/v1/auth/logout", json={"refresh_token": session["refresh_token"]}, headers=headers
    )
    assert out.json() == {"revoked": 1}
    revoked = await http.post(
        "/mp/v1/auth/refresh", json={"refresh_token": session["refresh_token"]}
    )
    assert revoked.status_code == 401
    assert revoked.json()["error"]["code"] == "unauthenticated"
    stored = await ctx.db.refresh_tokens.find_one({})
    assert session["refresh_token"] not in json.dumps(stored, default=str)  # stored hashed


async def test_access_tokens_expire_by_the_service_clock(ctx, http, login):
    session = await login()
    assert (await http.get("/mp/v1/me", headers=session.headers)).status_code == 200
    ctx.clock.advance(7201)
    expired = await http.get("/mp/v1/me", headers=session.headers)
    assert expired.status_code == 401
    forged = await http.get("/mp/v1/me", headers={"Authorization": "Bearer abc.def.ghi"})
    assert forged.status_code == 401
    assert (await http.get("/mp/v1/me")).status_code == 401


async def test_phone_is_stored_encrypted_and_only_ever_shown_masked(ctx, http, emulator, login):
    stream = io.StringIO()
    configure_logging("json", "debug", stream=stream)
    try:
        session = await login("o_phone")
        code = await emulator.phonecode("o_phone", "13812340000")
        bound = await http.post("/mp/v1/auth/phone", json={"code": code}, headers=session.headers)
        assert bound.status_code == 200
        assert bound.json() == {"phone_masked": "138****0000"}
        me = await http.get("/mp/v1/me", headers=session.headers)
        relog = await http.post(
            "/mp/v1/auth/refresh", json={"refresh_token": session.refresh_token}
        )
        structlog.get_logger("test").info("probe", note="bound 13812340000 for a test")
    finally:
        configure_logging("console", "info")
    assert me.json()["phone_masked"] == "138****0000"
    assert me.json()["phone_bound"] is True
    assert relog.json()["user"]["phone_bound"] is True
    for text in (bound.text, me.text, relog.text, stream.getvalue()):
        assert "13812340000" not in text
    assert stream.getvalue().count("\n") > 3  # the logs were captured, not empty
    stored = await ctx.db.users.find_one({"openid": "o_phone"})
    assert "13812340000" not in json.dumps(stored, default=str)
    assert ctx.crypto.decrypt(stored["phone"], "phone") == "13812340000"


async def test_a_bad_phone_code_is_refused(http, login):
    session = await login()
    response = await http.post("/mp/v1/auth/phone", json={"code": "nope"}, headers=session.headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_code"


async def test_profile_changes_are_validated(http, login):
    session = await login()
    changed = await http.patch(
        "/mp/v1/me",
        json={
            "real_name": " 张三 ",
            "expertise": ["天文", "机器人", "天文"],
            "region_code": "410782",
            "privacy_version": "2026-01",
        },
        headers=session.headers,
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["real_name"] == "张三"
    assert body["expertise"] == ["天文", "机器人"]
    assert body["region_name"] == "辉县市"
    assert body["privacy_version"] == "2026-01"
    bad = await http.patch("/mp/v1/me", json={"region_code": "999999"}, headers=session.headers)
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "region_code"
    long_tag = await http.patch(
        "/mp/v1/me", json={"expertise": ["x" * 21]}, headers=session.headers
    )
    assert long_tag.json()["error"]["field"] == "expertise[0]"
    assert (await http.get("/mp/v1/me", headers=session.headers)).json()["region_code"] == "410782"


@pytest.mark.parametrize("settings_overrides", [{"bootstrap_admin_openid": "o_boss"}])
async def test_the_bootstrap_admin_becomes_org_admin_of_the_root(ctx, http, emulator):
    body = (await _login(http, emulator, "o_boss")).json()
    [admin_role] = [r for r in body["user"]["roles"] if r["role"] == "org_admin"]
    root = await ctx.db.orgs.find_one({"parent_id": None})
    assert admin_role["org_id"] == str(root["_id"])
    again = (await _login(http, emulator, "o_boss")).json()
    assert again["user"]["roles"] == body["user"]["roles"]
    other = (await _login(http, emulator, "o_someone")).json()
    assert [r["role"] for r in other["user"]["roles"]] == ["volunteer"]


@pytest.mark.parametrize("settings_overrides", [{"login_rate_per_openid": 3}])
async def test_logins_are_rate_limited_per_openid(http, emulator):
    statuses = [(await _login(http, emulator, "o_eager")).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    assert (await _login(http, emulator, "o_calm")).status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"login_rate_per_ip": 4}])
async def test_logins_are_rate_limited_per_address(ctx, http, emulator):
    statuses = [(await _login(http, emulator, f"o_pupil{i}")).status_code for i in range(6)]
    assert statuses == [200] * 4 + [429] * 2
    assert (await http.post("/mp/v1/auth/login", json={"code": "x"})).json()["error"][
        "code"
    ] == "rate_limited"
    ctx.clock.advance(61)
    assert (await _login(http, emulator, "o_pupil9")).status_code == 200


_KEEPER_SCRIPT = """
import asyncio, sys
from config import load_settings
from server.context import Context
from server.wechat.token_keeper import TokenKeeper
from server.logs import configure_logging

async def main():
    configure_logging("json", "warning")
    ctx = await Context.start(load_settings({}, mongodb_uri=sys.argv[1], mongodb_db=sys.argv[2],
        wechat_api_base=sys.argv[3], data_dir=sys.argv[4]))
    keeper = TokenKeeper(ctx)
    print("ready", flush=True)
    sys.stdin.readline()
    tokens = await asyncio.gather(*[keeper.get() for _ in range(10)])
    print(" ".join(sorted(set(tokens))), flush=True)
    await ctx.close()

asyncio.run(main())
"""


async def test_token_keeper_fetches_once_for_20_callers_in_two_processes(ctx, emulator, tmp_path):
    other = subprocess.Popen(
        [
            sys.executable, "-c", _KEEPER_SCRIPT, str(ctx.settings.mongodb_uri),
            ctx.settings.mongodb_db, emulator.url, str(tmp_path),
        ],
        cwd=Path(__file__).resolve().parents[1],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    assert (await loop.run_in_executor(None, other.stdout.readline)).strip() == "ready"
    await emulator.fault("stable_token", delay_ms=300)  # a slow fetch invites a stampede
    keeper = TokenKeeper(ctx)
    other.stdin.write("go\n")
    other.stdin.flush()
    here = await asyncio.gather(*[keeper.get() for _ in range(10)])
    there = (await loop.run_in_executor(None, other.stdout.readline)).split()
    await loop.run_in_executor(None, other.wait, 30)
    assert set(here) == set(there) and len(set(here)) == 1
    assert emulator.state.stats()["token_issues_by_api"]["stable_token"] == 1


async def test_a_rejected_token_is_replaced_once_for_everyone(ctx, emulator):
    keeper = TokenKeeper(ctx)
    first = await keeper.get()
    await keeper.invalidate(first)
    second = await keeper.get()
    assert second != first
    assert await TokenKeeper(ctx).get() == second
    assert emulator.state.stats()["token_issues_by_api"]["stable_token"] == 2
