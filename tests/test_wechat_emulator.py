"""The WeChat emulator, exercised through WeChatAdapter (real wechatpy over real HTTP)."""

from __future__ import annotations

import asyncio
import base64
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from server.wechat.client import WeChatAdapter, WeChatError
from server.wechat.emulator import DEFAULT_APPID, DEFAULT_SECRET, EmulatorState, make_emulator_app


class Clock:
    """Wall time plus a shift the tests control."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift

    def advance(self, seconds: float) -> None:
        self.shift += seconds


class Keeper:
    """A minimal stand-in for the central token keeper: stable_token, cached, single-flight."""

    def __init__(self, token: str | None = None) -> None:
        self.adapter: WeChatAdapter | None = None
        self.token = token
        self.fetches = 0
        self.invalidated: list[str] = []
        self._force = False
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        async with self._lock:
            if self.token is None:
                assert self.adapter is not None
                self.token, _ = await self.adapter.fetch_stable_token(force_refresh=self._force)
                self.fetches += 1
                self._force = False
            return self.token

    async def invalidate(self, bad_token: str) -> None:
        async with self._lock:
            self.invalidated.append(bad_token)
            if self.token == bad_token:
                self.token = None


class Emulator:
    def __init__(self, state: EmulatorState, clock: Clock, base_url: str) -> None:
        self.state = state
        self.clock = clock
        self.base_url = base_url
        self.http = httpx.AsyncClient(base_url=base_url, timeout=10)

    async def post(self, path: str, body: dict | None = None) -> dict:
        res = await self.http.post(path, json=body or {})
        res.raise_for_status()
        return res.json()

    async def get(self, path: str, **params) -> dict:
        res = await self.http.get(path, params=params)
        res.raise_for_status()
        return res.json()

    async def jscode(self, openid: str, unionid: str | None = None) -> str:
        body = {"openid": openid} | ({"unionid": unionid} if unionid else {})
        return (await self.post("/__emulator__/jscode", body))["code"]

    async def fault(self, api: str, count: int = 1, **kw) -> None:
        await self.post("/__emulator__/faults", {"api": api, "count": count, **kw})


@pytest.fixture(scope="module")
async def emulator():
    clock = Clock()
    state = EmulatorState(now=clock)
    sock, port = bind_unused_port()
    server = HTTPServer(make_emulator_app(state))
    server.add_sockets([sock])
    emu = Emulator(state, clock, f"http://127.0.0.1:{port}/")
    yield emu
    await emu.http.aclose()
    server.stop()
    await server.close_all_connections()


@pytest.fixture(scope="module")
def executor():
    pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="wechat-test")
    yield pool
    pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture(autouse=True)
async def fresh_emulator(emulator):
    await emulator.post("/__emulator__/reset")
    emulator.clock.shift = 0.0
    yield


def make_adapter(emulator: Emulator, executor, keeper: Keeper | None = None, **kw) -> WeChatAdapter:
    keeper = keeper or Keeper()
    adapter = WeChatAdapter(
        appid=kw.pop("appid", DEFAULT_APPID),
        secret=kw.pop("secret", DEFAULT_SECRET),
        api_base_url=emulator.base_url,
        executor=executor,
        timeout=kw.pop("timeout", 5.0),
        access_token_getter=keeper.get,
        access_token_invalidator=keeper.invalidate,
    )
    keeper.adapter = adapter
    return adapter


@pytest.fixture
def keeper():
    return Keeper()


@pytest.fixture
def adapter(emulator, executor, keeper):
    a = make_adapter(emulator, executor, keeper)
    yield a
    a.close()


# -- jscode2session ---------------------------------------------------------------------


async def test_code_to_session_returns_the_minted_identity(emulator, adapter):
    code = await emulator.jscode("o_alice", unionid="u_alice")
    result = await adapter.code_to_session(code)
    assert result["openid"] == "o_alice"
    assert result["unionid"] == "u_alice"
    assert len(base64.b64decode(result["session_key"])) == 16
    # no access token is involved in a login
    stats = await emulator.get("/__emulator__/stats")
    assert stats["token_issues"] == 0
    assert stats["calls"]["jscode2session"] == 1


async def test_code_without_unionid_and_generated_openid(emulator, adapter):
    code = (await emulator.post("/__emulator__/jscode", {}))["code"]
    result = await adapter.code_to_session(code)
    assert result["openid"].startswith("o") and len(result["openid"]) == 28
    assert "unionid" not in result


async def test_unknown_code_is_40029(adapter):
    with pytest.raises(WeChatError) as info:
        await adapter.code_to_session("no-such-code")
    assert info.value.errcode == 40029
    assert not info.value.transient


async def test_reused_code_is_40163(emulator, adapter):
    code = await emulator.jscode("o_bob")
    await adapter.code_to_session(code)
    with pytest.raises(WeChatError) as info:
        await adapter.code_to_session(code)
    assert info.value.errcode == 40163


async def test_code_expires_after_five_minutes(emulator, adapter):
    fresh, stale = await emulator.jscode("o_carol"), await emulator.jscode("o_carol")
    emulator.clock.advance(290)
    assert (await adapter.code_to_session(fresh))["openid"] == "o_carol"
    emulator.clock.advance(20)
    with pytest.raises(WeChatError) as info:
        await adapter.code_to_session(stale)
    assert info.value.errcode == 40029


async def test_wrong_secret_is_rejected(emulator, executor):
    bad = make_adapter(emulator, executor, secret="not-the-secret")
    code = await emulator.jscode("o_dave")
    with pytest.raises(WeChatError) as info:
        await bad.code_to_session(code)
    assert info.value.errcode == 40125
    with pytest.raises(WeChatError) as info:
        await bad.fetch_stable_token()
    assert info.value.errcode == 40125
    bad.close()


# -- tokens -----------------------------------------------------------------------------


async def test_stable_token_is_stable_until_force_refresh(emulator, adapter):
    first, expires_in = await adapter.fetch_stable_token()
    assert 7000 < expires_in <= 7200
    emulator.clock.advance(60)
    again, remaining = await adapter.fetch_stable_token()
    assert again == first
    assert remaining < expires_in
    assert emulator.state.token_issues == 1

    forced, _ = await adapter.fetch_stable_token(force_refresh=True)
    assert forced != first
    assert emulator.state.token_issues == 2
    # the old token died with the force refresh
    assert emulator.state.check_token(first)[0] == 40001
    assert emulator.state.check_token(forced) == (0, DEFAULT_APPID)
    # force refreshes closer than 30 s apart do not refresh
    assert (await adapter.fetch_stable_token(force_refresh=True))[0] == forced
    emulator.clock.advance(31)
    assert (await adapter.fetch_stable_token(force_refresh=True))[0] != forced


async def test_stable_token_renews_in_its_last_five_minutes(emulator, adapter):
    first, _ = await adapter.fetch_stable_token()
    emulator.clock.advance(7200 - 200)
    renewed, expires_in = await adapter.fetch_stable_token()
    assert renewed != first and expires_in == 7200
    # both are usable during the handover, the old one until its own expiry
    assert emulator.state.check_token(first)[0] == 0
    emulator.clock.advance(201)
    assert emulator.state.check_token(first)[0] == 42001
    assert emulator.state.check_token(renewed)[0] == 0


async def test_plain_token_endpoint(emulator):
    params = {"grant_type": "client_credential", "appid": DEFAULT_APPID}
    ok = await emulator.get("/cgi-bin/token", **params, secret=DEFAULT_SECRET)
    assert ok["expires_in"] == 7200 and ok["access_token"]
    assert (await emulator.get("/cgi-bin/token", **params, secret="wrong"))["errcode"] == 40125
    unknown = {**params, "appid": "wx_nobody"}
    assert (await emulator.get("/cgi-bin/token", **unknown, secret="x"))["errcode"] == 40013
    second = await emulator.get("/cgi-bin/token", **params, secret=DEFAULT_SECRET)
    assert second["access_token"] != ok["access_token"]
    stats = await emulator.get("/__emulator__/stats")
    assert stats["token_issues_by_api"] == {"token": 2, "stable_token": 0}


async def test_token_errors_on_api_calls(emulator):
    body = {"touser": "o_x", "template_id": "T", "data": {"thing1": {"value": "x"}}}
    url = "/cgi-bin/message/subscribe/send"
    assert (await emulator.post(url, body))["errcode"] == 41001
    assert (await emulator.post(url + "?access_token=nope", body))["errcode"] == 40001
    token, _ = emulator.state.issue_stable_token(DEFAULT_APPID)
    emulator.clock.advance(7201)
    assert (await emulator.post(f"{url}?access_token={token}", body))["errcode"] == 42001


async def test_rejected_token_is_invalidated_and_the_call_retried_once(emulator, executor):
    keeper = Keeper(token="stale-token-from-elsewhere")
    adapter = make_adapter(emulator, executor, keeper)
    await emulator.post(
        "/__emulator__/subscriptions", {"openid": "o_erin", "accepted": ["TPL_REMIND"] * 2}
    )
    msgid = await adapter.send_subscribe_message(
        "o_erin", "TPL_REMIND", {"thing1": {"value": "科普讲座"}}
    )
    assert isinstance(msgid, int)
    assert keeper.invalidated == ["stale-token-from-elsewhere"]
    assert keeper.fetches == 1
    stats = await emulator.get("/__emulator__/stats")
    assert stats["calls"]["subscribe_send"] == 2
    assert stats["calls"]["stable_token"] == 1

    # an expired token (42001) takes the same path
    emulator.state.expire_tokens()
    await adapter.send_subscribe_message("o_erin", "TPL_REMIND", {"thing1": {"value": "再次"}})
    assert len(keeper.invalidated) == 2 and keeper.fetches == 2
    assert len(emulator.state.messages_for("o_erin")) == 2
    adapter.close()


async def test_token_still_rejected_after_retry_raises(emulator, adapter, keeper):
    await emulator.fault("phone", count=2, errcode=40001)
    with pytest.raises(WeChatError) as info:
        await adapter.get_phone_number("whatever")
    assert info.value.errcode == 40001
    assert len(keeper.invalidated) == 1


# -- phone ------------------------------------------------------------------------------


async def test_phone_number(emulator, adapter):
    body = {"openid": "o_frank", "phone": "13800138000"}
    code = (await emulator.post("/__emulator__/phonecode", body))["code"]
    info = await adapter.get_phone_number(code)
    assert info["purePhoneNumber"] == "13800138000"
    assert info["phoneNumber"] == "13800138000"
    assert info["countryCode"] == "86"
    assert info["watermark"]["appid"] == DEFAULT_APPID
    assert abs(info["watermark"]["timestamp"] - time.time()) < 60
    with pytest.raises(WeChatError) as again:
        await adapter.get_phone_number(code)
    assert again.value.errcode == 40029
    with pytest.raises(WeChatError) as bad:
        await adapter.get_phone_number("bogus")
    assert bad.value.errcode == 40029


# -- subscribe messages -----------------------------------------------------------------


async def test_subscribe_send_is_recorded(emulator, adapter):
    for openid in ("o_grace", "o_heidi"):
        await emulator.post(
            "/__emulator__/subscriptions", {"openid": openid, "accepted": ["TPL_A"]}
        )
    data = {"thing1": {"value": "青少年科技馆"}, "time2": {"value": "2025-05-01 09:00"}}
    msgid = await adapter.send_subscribe_message(
        "o_grace", "TPL_A", data, page="pages/activity/detail?id=1"
    )
    await adapter.send_subscribe_message("o_heidi", "TPL_A", {"thing1": {"value": "x"}})
    mine = (await emulator.get("/__emulator__/messages", touser="o_grace"))["items"]
    assert len(mine) == 1
    message = mine[0]
    assert message["msgid"] == msgid
    assert message["template_id"] == "TPL_A"
    assert message["page"] == "pages/activity/detail?id=1"
    assert message["data"] == data
    assert message["sent_at"].endswith("+00:00")
    everyone = (await emulator.get("/__emulator__/messages"))["items"]
    assert {m["touser"] for m in everyone} == {"o_grace", "o_heidi"}


async def test_a_send_beyond_the_users_accepts_is_refused_like_wechat(emulator, adapter):
    answer = await emulator.post(
        "/__emulator__/subscriptions", {"openid": "o_once", "accepted": ["TPL_A", "TPL_A"]}
    )
    assert answer["remaining"] == {"TPL_A": 2}
    for _ in range(2):
        await adapter.send_subscribe_message("o_once", "TPL_A", {"thing1": {"value": "x"}})
    with pytest.raises(WeChatError) as info:
        await adapter.send_subscribe_message("o_once", "TPL_A", {"thing1": {"value": "x"}})
    assert info.value.errcode == 43101 and not info.value.transient
    with pytest.raises(WeChatError) as info:
        await adapter.send_subscribe_message("o_once", "TPL_B", {"thing1": {"value": "x"}})
    assert info.value.errcode == 43101
    assert len(emulator.state.messages_for("o_once")) == 2
    bad = await emulator.http.post("/__emulator__/subscriptions", json={"openid": "o_once"})
    assert bad.status_code == 400


async def test_subscribe_send_validates_shape(emulator, adapter):
    with pytest.raises(WeChatError) as info:
        await adapter.send_subscribe_message("o_ivan", "TPL_A", {"thing1": {"nope": 1}})
    assert info.value.errcode == 47003
    with pytest.raises(WeChatError) as info:
        await adapter.send_subscribe_message("o_ivan", "TPL_A", {"thing1": {"value": "长" * 21}})
    assert info.value.errcode == 47003
    with pytest.raises(WeChatError) as info:
        await adapter.send_subscribe_message("", "TPL_A", {"thing1": {"value": "x"}})
    assert info.value.errcode == 40003
    assert emulator.state.messages == []


async def test_subscribe_send_with_state_and_lang(emulator, adapter):
    await emulator.post("/__emulator__/subscriptions", {"openid": "o_judy", "accepted": ["TPL_B"]})
    await adapter.send_subscribe_message(
        "o_judy", "TPL_B", {"thing1": {"value": "x"}}, miniprogram_state="trial", lang="en_US"
    )
    (message,) = emulator.state.messages_for("o_judy")
    assert message["miniprogram_state"] == "trial" and message["lang"] == "en_US"


async def test_hundred_concurrent_sends_are_all_recorded(emulator, adapter, keeper):
    for i in range(100):
        emulator.state.accept_subscriptions(f"o_crowd_{i}", ["TPL_C"])
    await emulator.post("/__emulator__/config", {"latency_ms": 50})
    started = time.monotonic()
    msgids = await asyncio.gather(
        *(
            adapter.send_subscribe_message(f"o_crowd_{i}", "TPL_C", {"number1": {"value": i}})
            for i in range(100)
        )
    )
    elapsed = time.monotonic() - started
    assert len(set(msgids)) == 100
    items = (await emulator.get("/__emulator__/messages"))["items"]
    assert sorted(m["touser"] for m in items) == sorted(f"o_crowd_{i}" for i in range(100))
    assert keeper.fetches == 1 and emulator.state.token_issues == 1
    # 100 calls of 50 ms through 16 threads overlap: far less than 100 × 50 ms
    assert 0.05 * 100 / 16 <= elapsed < 4.0


# -- faults -----------------------------------------------------------------------------


async def test_system_error_once_then_success(emulator, adapter):
    await emulator.fault("jscode2session", errcode=-1)
    code = await emulator.jscode("o_kim")
    with pytest.raises(WeChatError) as info:
        await adapter.code_to_session(code)
    assert info.value.errcode == -1 and info.value.transient and not info.value.timeout
    assert (await adapter.code_to_session(code))["openid"] == "o_kim"


@pytest.mark.parametrize(
    ("errcode", "transient"), [(45009, True), (45011, True), (43101, False), (87014, False)]
)
async def test_fault_errcodes_classified(emulator, adapter, errcode, transient):
    await emulator.post("/__emulator__/subscriptions", {"openid": "o_lee", "accepted": ["TPL_A"]})
    await emulator.fault("subscribe_send", errcode=errcode)
    with pytest.raises(WeChatError) as info:
        await adapter.send_subscribe_message("o_lee", "TPL_A", {"thing1": {"value": "x"}})
    assert info.value.errcode == errcode
    assert info.value.transient is transient
    assert info.value.errmsg  # a real-looking errmsg came back
    assert emulator.state.messages == []


async def test_faults_can_be_cleared(emulator, adapter):
    await emulator.fault("wxacode", count=5, errcode=45011)
    assert (await emulator.get("/__emulator__/stats"))["pending_faults"] == {"wxacode": 5}
    await emulator.http.delete("/__emulator__/faults")
    assert (await adapter.get_wxacode_unlimited("a=1")).startswith(b"\x89PNG")


async def test_bad_fault_request_is_400(emulator):
    res = await emulator.http.post("/__emulator__/faults", json={"api": "nope", "errcode": -1})
    assert res.status_code == 400
    assert res.json()["error"]["code"] == "invalid_request"


async def test_delay_longer_than_timeout_is_a_timeout(emulator, executor):
    adapter = make_adapter(emulator, executor, timeout=0.25)
    await emulator.fault("jscode2session", delay_ms=900)
    code = await emulator.jscode("o_mallory")
    started = time.monotonic()
    with pytest.raises(WeChatError) as info:
        await adapter.code_to_session(code)
    assert time.monotonic() - started < 0.8
    assert info.value.timeout and info.value.transient and info.value.errcode == -1
    adapter.close()
    # let the emulator's delayed answer play out before the next test resets it
    await asyncio.sleep(1.1 - (time.monotonic() - started))
    # the emulator did answer (too late): WeChat may act on calls the client gave up on
    assert emulator.state.login_codes[code].used


async def test_delay_shorter_than_timeout_just_slows(emulator, adapter):
    await emulator.fault("jscode2session", delay_ms=200)
    code = await emulator.jscode("o_nina")
    started = time.monotonic()
    assert (await adapter.code_to_session(code))["openid"] == "o_nina"
    assert time.monotonic() - started >= 0.2


async def test_delay_does_not_block_the_emulator(emulator, adapter):
    await emulator.fault("msg_sec_check", delay_ms=800)
    slow = asyncio.ensure_future(adapter.msg_sec_check("你好", "o_olga"))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    assert (await adapter.code_to_session(await emulator.jscode("o_olga")))["openid"] == "o_olga"
    assert time.monotonic() - started < 0.5
    assert (await slow)["result"]["suggest"] == "pass"


# -- msg_sec_check ----------------------------------------------------------------------


async def test_msg_sec_check_pass_and_risky(emulator, adapter):
    ok = await adapter.msg_sec_check("周末一起去科技馆看机器人展", "o_pat", scene=2)
    assert ok["result"] == {"suggest": "pass", "label": 100}
    assert ok["trace_id"]
    risky = await adapter.msg_sec_check("这里可以赌博", "o_pat", scene=2)
    assert risky["result"]["suggest"] == "risky"
    assert risky["result"]["label"] != 100
    assert any(d.get("keyword") == "赌博" for d in risky["detail"])

    await emulator.post("/__emulator__/config", {"banned_words": {"火箭": 20001}})
    now_risky = await adapter.msg_sec_check("火箭发射", "o_pat")
    assert now_risky["result"] == {"suggest": "risky", "label": 20001}
    assert (await adapter.msg_sec_check("这里可以赌博", "o_pat"))["result"]["suggest"] == "pass"


async def test_msg_sec_check_v1_and_bad_arguments(emulator):
    token, _ = emulator.state.issue_stable_token(DEFAULT_APPID)
    url = f"/wxa/msg_sec_check?access_token={token}"
    assert (await emulator.post(url, {"content": "违禁品"}))["errcode"] == 87014
    assert (await emulator.post(url, {"content": "科普"}))["errcode"] == 0
    missing_openid = {"content": "科普", "version": 2, "scene": 1}
    assert (await emulator.post(url, missing_openid))["errcode"] == 47003


# -- wxacode ----------------------------------------------------------------------------


async def test_wxacode_is_a_png(emulator, adapter):
    image = await adapter.get_wxacode_unlimited("act=42&k=abc", page="pages/checkin/index")
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    wide = await adapter.get_wxacode_unlimited("act=42&k=abc", width=1280)
    assert wide.startswith(b"\x89PNG") and wide != image

    with pytest.raises(WeChatError) as info:
        await adapter.get_wxacode_unlimited("x", page="/pages/checkin/index")
    assert info.value.errcode == 41030
    with pytest.raises(WeChatError) as info:
        await adapter.get_wxacode_unlimited("s" * 33)
    assert info.value.errcode == 40169
