"""The WeChat API handlers, answering on the real paths with the real parameters, response
shapes and error codes; business errors are HTTP 200 with ``{"errcode", "errmsg"}``."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import re
import secrets
from typing import Any

import segno

from server.wechat.emulator.base import BaseHandler
from server.wechat.emulator.state import EmulatorState

#: errmsg texts as the real API words them (a " rid: ..." suffix is appended on errors).
ERRMSGS: dict[int, str] = {
    -1: "system error",
    0: "ok",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40029: "invalid code",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    40163: "code been used",
    40169: "invalid length for scene, or the data is not json string",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
    41030: "invalid page",
    42001: "access_token expired",
    43101: "user refuse to accept the msg",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    47001: "data format error",
    47003: "argument invalid!",
    87014: "risky content",
}

# scene of getwxacodeunlimit: at most 32 visible characters of this set.
_SCENE_RE = re.compile(r"^[0-9A-Za-z!#$&'()*+,/:;=?@\-._~]{1,32}$")
_MINIPROGRAM_STATES = {"developer", "trial", "formal"}
_LANGS = {"zh_CN", "en_US", "zh_HK", "zh_TW"}
_ENV_VERSIONS = {"release", "trial", "develop"}
# Length limits of subscribe message values, by the keyword's type prefix.
_VALUE_LIMITS = {
    "thing": 20,
    "name": 10,
    "phrase": 5,
    "symbol": 5,
    "number": 32,
    "letter": 32,
    "character_string": 32,
    "phone_number": 17,
    "car_number": 8,
}
_KEY_TYPE_RE = re.compile(r"^([a-z_]+?)\d+$")


def errmsg_for(errcode: int) -> str:
    """The real-looking errmsg for ``errcode``, with a request id like WeChat's."""
    text = ERRMSGS.get(errcode, "unknown error")
    if errcode == 0:
        return text
    rid = "-".join(secrets.token_hex(4) for _ in range(3))
    return f"{text} rid: {rid}"


def _session_key() -> str:
    return base64.b64encode(secrets.token_bytes(16)).decode("ascii")


@functools.lru_cache(maxsize=256)
def _qr_png(content: str, width: int) -> bytes:
    qr = segno.make(content, micro=False)
    modules = qr.symbol_size(scale=1, border=4)[0]
    out = io.BytesIO()
    qr.save(out, kind="png", scale=max(1, width // modules), border=4)
    return out.getvalue()


class _WxHandler(BaseHandler):
    """Counts calls, applies latency and injected faults, speaks errcode/errmsg."""

    api = ""

    def wx_error(self, errcode: int) -> None:
        self.state.errors[self.api] += 1
        self.write_json({"errcode": errcode, "errmsg": errmsg_for(errcode)})

    async def begin(self) -> bool:
        """Run before the API's own work; True when the call has already been answered."""
        state = self.state
        state.calls[self.api] += 1
        fault = state.take_fault(self.api)
        delay_ms = fault.delay_ms if fault else 0.0
        if self.api in state.latency_apis:
            delay_ms += state.latency_ms
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        if fault and fault.errcode is not None:
            self.wx_error(fault.errcode)
            return True
        return False

    def authorised_appid(self) -> str | None:
        """The appid of the access_token in the query, or None after answering the error."""
        errcode, appid = self.state.check_token(self.get_query_argument("access_token", None))
        if errcode:
            self.wx_error(errcode)
            return None
        return appid

    def check_app(self, appid: Any, secret: Any) -> bool:
        """Check an appid/secret pair; answers and returns False when wrong."""
        if not appid:
            self.wx_error(41002)
        elif not secret:
            self.wx_error(41004)
        elif appid not in self.state.apps:
            self.wx_error(40013)
        elif self.state.apps[appid] != secret:
            self.wx_error(40125)
        else:
            return True
        return False

    def query_app(self, grant_type: str) -> str | None:
        """The appid of a query-string call checked with its secret and grant_type, or None
        when the error has been answered already."""
        appid = self.get_query_argument("appid", None)
        if not self.check_app(appid, self.get_query_argument("secret", None)):
            return None
        if self.get_query_argument("grant_type", None) != grant_type:
            self.wx_error(40002)
            return None
        return appid


class TokenHandler(_WxHandler):
    api = "token"

    async def get(self) -> None:
        if await self.begin():
            return
        appid = self.query_app("client_credential")
        if appid is None:
            return
        token, expires_in = self.state.issue_plain_token(appid)
        self.write_json({"access_token": token, "expires_in": expires_in})


class StableTokenHandler(_WxHandler):
    api = "stable_token"

    async def post(self) -> None:
        if await self.begin():
            return
        body = self.json_body()
        if not isinstance(body, dict):
            return self.wx_error(47001)
        if not self.check_app(body.get("appid"), body.get("secret")):
            return
        if body.get("grant_type") != "client_credential":
            return self.wx_error(40002)
        force = body.get("force_refresh", False)
        if not isinstance(force, bool):
            return self.wx_error(47001)
        token, expires_in = self.state.issue_stable_token(body["appid"], force)
        self.write_json({"access_token": token, "expires_in": expires_in})


class JsCode2SessionHandler(_WxHandler):
    api = "jscode2session"

    async def get(self) -> None:
        if await self.begin():
            return
        appid = self.query_app("authorization_code")
        if appid is None:
            return
        js_code = self.get_query_argument("js_code", None)
        if not js_code:
            return self.wx_error(41008)
        record = self.state._redeem(self.state.login_codes, js_code, appid, 40163)
        if isinstance(record, int):
            return self.wx_error(record)
        result = {"session_key": _session_key(), "openid": record.openid}
        if record.unionid:
            result["unionid"] = record.unionid
        self.write_json(result)


class PhoneNumberHandler(_WxHandler):
    api = "phone"

    async def post(self) -> None:
        if await self.begin():
            return
        appid = self.authorised_appid()
        if appid is None:
            return
        body = self.json_body()
        if not isinstance(body, dict):
            return self.wx_error(47001)
        code = body.get("code")
        if not isinstance(code, str) or not code:
            return self.wx_error(47003)
        record = self.state._redeem(self.state.phone_codes, code, appid, 40029)
        if isinstance(record, int):
            return self.wx_error(record)
        pure = record.phone
        full = pure if record.country_code == "86" else f"+{record.country_code}{pure}"
        self.write_json(
            {
                "errcode": 0,
                "errmsg": "ok",
                "phone_info": {
                    "phoneNumber": full,
                    "purePhoneNumber": pure,
                    "countryCode": record.country_code,
                    "watermark": {"timestamp": int(self.state.time()), "appid": appid},
                },
            }
        )


def _subscribe_errcode(state: EmulatorState, body: Any) -> int:
    """0 when the subscribe/send body is well formed, else the real API's errcode."""
    if not isinstance(body, dict):
        return 47001
    touser = body.get("touser")
    if not isinstance(touser, str) or not touser:
        return 40003
    template_id = body.get("template_id")
    if not isinstance(template_id, str) or not template_id:
        return 40037
    if state.template_ids is not None and template_id not in state.template_ids:
        return 40037
    page = body.get("page")
    if page is not None and (not isinstance(page, str) or page.startswith("/")):
        return 47003 if not isinstance(page, str) else 41030
    if body.get("miniprogram_state", "formal") not in _MINIPROGRAM_STATES:
        return 47003
    if body.get("lang", "zh_CN") not in _LANGS:
        return 47003
    data = body.get("data")
    if not isinstance(data, dict) or not data:
        return 47003
    for key, item in data.items():
        if not isinstance(item, dict) or "value" not in item:
            return 47003
        value = item["value"]
        if not isinstance(value, str | int | float) or value == "":
            return 47003
        if state.strict_template_values:
            match = _KEY_TYPE_RE.match(key)
            limit = _VALUE_LIMITS.get(match.group(1)) if match else None
            if limit is not None and len(str(value)) > limit:
                return 47003
    return 0


class SubscribeSendHandler(_WxHandler):
    api = "subscribe_send"

    async def post(self) -> None:
        if await self.begin():
            return
        if self.authorised_appid() is None:
            return
        body = self.json_body()
        errcode = _subscribe_errcode(self.state, body)
        if errcode:
            return self.wx_error(errcode)
        if not self.state.use_subscription(body["touser"], body["template_id"]):
            return self.wx_error(43101)
        msgid = self.state.record_message(body)
        self.write_json({"errcode": 0, "errmsg": "ok", "msgid": msgid})


class MsgSecCheckHandler(_WxHandler):
    api = "msg_sec_check"

    def _verdict(self, content: str) -> tuple[str, int, str | None]:
        for word, label in self.state.banned_words.items():
            if word in content:
                return "risky", label, word
        for word, label in self.state.review_words.items():
            if word in content:
                return "review", label, word
        return "pass", 100, None

    async def post(self) -> None:
        if await self.begin():
            return
        if self.authorised_appid() is None:
            return
        body = self.json_body()
        if not isinstance(body, dict):
            return self.wx_error(47001)
        content = body.get("content")
        if not isinstance(content, str):
            return self.wx_error(47003)
        version = body.get("version", 1)
        suggest, label, keyword = self._verdict(content)
        if version in (1, "1"):
            if suggest == "risky":
                return self.wx_error(87014)
            return self.write_json({"errcode": 0, "errmsg": "ok"})
        if version not in (2, "2"):
            return self.wx_error(47003)
        scene = body.get("scene")
        openid = body.get("openid")
        if scene not in (1, 2, 3, 4) or not isinstance(openid, str) or not openid:
            return self.wx_error(47003)
        detail: list[dict[str, Any]] = [
            {"strategy": "content_model", "errcode": 0, "suggest": suggest, "label": label}
        ]
        if keyword is not None:
            detail[0]["prob"] = 90
            detail.append(
                {
                    "strategy": "keyword",
                    "errcode": 0,
                    "suggest": suggest,
                    "label": label,
                    "level": 20 if suggest == "review" else 90,
                    "keyword": keyword,
                }
            )
        self.write_json(
            {
                "errcode": 0,
                "errmsg": "ok",
                "result": {"suggest": suggest, "label": label},
                "detail": detail,
                "trace_id": f"{secrets.token_hex(4)}-{secrets.token_hex(4)}-{secrets.token_hex(4)}",
            }
        )


class WxaCodeUnlimitHandler(_WxHandler):
    api = "wxacode"

    async def post(self) -> None:
        if await self.begin():
            return
        if self.authorised_appid() is None:
            return
        body = self.json_body()
        if not isinstance(body, dict):
            return self.wx_error(47001)
        scene = body.get("scene")
        if not isinstance(scene, str) or not _SCENE_RE.match(scene):
            return self.wx_error(40169)
        page = body.get("page")
        if page is not None:
            if not isinstance(page, str):
                return self.wx_error(47003)
            check_path = body.get("check_path", True) is not False
            if page.startswith("/") or (check_path and not page.startswith("pages/")):
                return self.wx_error(41030)
        if body.get("env_version", "release") not in _ENV_VERSIONS:
            return self.wx_error(47003)
        width = body.get("width", 430)
        if not isinstance(width, int) or isinstance(width, bool):
            return self.wx_error(47003)
        width = min(max(width, 280), 1280)
        content = f"wxa://{page or 'index'}?scene={scene}"
        # PNG encoding is CPU work: keep it off the event loop.
        png = await asyncio.get_running_loop().run_in_executor(None, _qr_png, content, width)
        self.set_header("Content-Type", "image/png")
        self.finish(png)
