"""A local stand-in for WeChat's server API (api.weixin.qq.com).

``make_emulator_app()`` returns a Tornado application that answers on the real
paths, with the real parameters, response shapes and error codes, so that
wechatpy (or any other client) pointed at it cannot tell the difference:

- ``GET  /cgi-bin/token``                 access token (plain; each call issues a new one)
- ``POST /cgi-bin/stable_token``          stable access token (same token while valid)
- ``GET  /sns/jscode2session``            wx.login code -> openid / session_key
- ``POST /wxa/business/getuserphonenumber``  phone code -> phone_info
- ``POST /cgi-bin/message/subscribe/send``   subscribe message
- ``POST /wxa/msg_sec_check``             text security check (v1 and v2)
- ``POST /wxa/getwxacodeunlimit``         mini-program code image (a PNG QR code)

Like the real servers, business errors come back as HTTP 200 with
``{"errcode": N, "errmsg": "..., rid: ..."}``.

Test and development endpoints live under ``/__emulator__/``:

- ``POST /__emulator__/jscode {"openid"?, "unionid"?, "appid"?}`` → ``{"code"}``
- ``POST /__emulator__/phonecode {"openid", "phone", "country_code"?}`` → ``{"code"}``
- ``GET /__emulator__/messages?touser=&template_id=`` → ``{"items": [...]}``; DELETE clears
- ``POST /__emulator__/faults {"api", "errcode"?, "delay_ms"?, "count"}``; GET lists;
  DELETE clears. api ∈ ``API_NAMES``.
- ``GET|POST /__emulator__/config {"latency_ms"?, "latency_apis"?, "banned_words"?,
  "review_words"?}`` (latency applies to subscribe_send unless latency_apis says otherwise)
- ``GET|POST /__emulator__/clock {"advance_s"}`` moves the emulator's clock forward
- ``POST /__emulator__/expire_tokens`` makes every issued access token expired
- ``GET /__emulator__/stats`` → calls and errors per api, token issues, messages
- ``POST /__emulator__/reset`` forgets everything (codes, tokens, messages, faults,
  counters, config changes, clock offset)

All state is in memory in one ``EmulatorState``; handlers are coroutines and never
block, so hundreds of concurrent requests are fine.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import segno
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.log import access_log
from tornado.netutil import bind_sockets

DEFAULT_APPID = "wx_emulator_appid"
DEFAULT_SECRET = "emulator_secret"

#: The names used by the fault, config and stats endpoints.
API_NAMES = (
    "token",
    "stable_token",
    "jscode2session",
    "phone",
    "subscribe_send",
    "msg_sec_check",
    "wxacode",
)

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

TOKEN_TTL_S = 7200
#: wx.login and getPhoneNumber codes live five minutes.
CODE_TTL_S = 300
#: stable_token: within this many seconds of expiry a normal call issues a new token,
#: and a replaced plain token stays usable this long.
TOKEN_HANDOVER_S = 300
#: stable_token: consecutive force refreshes closer than this return the current token.
FORCE_REFRESH_MIN_INTERVAL_S = 30

DEFAULT_BANNED_WORDS: dict[str, int] = {"赌博": 20006, "违禁": 20006}
DEFAULT_REVIEW_WORDS: dict[str, int] = {"疑似违规": 21000}

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


@dataclass
class _Token:
    appid: str
    kind: str  # "token" | "stable_token"
    expires_at: float


@dataclass
class _Code:
    appid: str
    openid: str
    created_at: float
    used: bool = False
    unionid: str | None = None
    phone: str | None = None
    country_code: str = "86"


@dataclass
class _Fault:
    errcode: int | None
    delay_ms: float
    remaining: int


class EmulatorState:
    """Everything the emulator knows, in memory.

    ``now`` is the clock (``time.time`` by default); ``advance()`` moves the
    emulator's own view of time forward on top of it.
    """

    def __init__(
        self,
        appid: str = DEFAULT_APPID,
        secret: str = DEFAULT_SECRET,
        *,
        now: Callable[[], float] | None = None,
        apps: Mapping[str, str] | None = None,
        latency_ms: float = 0.0,
        latency_apis: Iterable[str] = ("subscribe_send",),
        banned_words: Mapping[str, int] | None = None,
        review_words: Mapping[str, int] | None = None,
        template_ids: Iterable[str] | None = None,
        strict_template_values: bool = True,
    ) -> None:
        self.appid = appid
        self.secret = secret
        self._now = now or time.time
        self._initial = {
            "latency_ms": float(latency_ms),
            "latency_apis": set(latency_apis),
            "banned_words": dict(DEFAULT_BANNED_WORDS if banned_words is None else banned_words),
            "review_words": dict(DEFAULT_REVIEW_WORDS if review_words is None else review_words),
        }
        self.apps: dict[str, str] = {appid: secret}
        if apps:
            self.apps.update(apps)
        #: None accepts any template_id; a set makes others fail with 40037.
        self.template_ids: set[str] | None = set(template_ids) if template_ids else None
        #: enforce the per-type length limits of subscribe message values (thing ≤ 20, …).
        self.strict_template_values = strict_template_values
        self.reset()

    # -- clock ---------------------------------------------------------------------------
    def time(self) -> float:
        return self._now() + self.clock_offset

    def advance(self, seconds: float) -> None:
        self.clock_offset += float(seconds)

    # -- lifecycle -----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything issued, received and configured at run time."""
        self.clock_offset = 0.0
        self.latency_ms: float = self._initial["latency_ms"]
        self.latency_apis: set[str] = set(self._initial["latency_apis"])
        self.banned_words: dict[str, int] = dict(self._initial["banned_words"])
        self.review_words: dict[str, int] = dict(self._initial["review_words"])
        self.tokens: dict[str, _Token] = {}
        self._stable: dict[str, str] = {}
        self._last_force_refresh: dict[str, float] = {}
        self._plain: dict[str, str] = {}
        self.login_codes: dict[str, _Code] = {}
        self.phone_codes: dict[str, _Code] = {}
        self.messages: list[dict[str, Any]] = []
        self.faults: dict[str, deque[_Fault]] = {}
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.token_issues = 0
        self.token_issues_by_api: Counter[str] = Counter()
        self._msgid = 2_000_000_000

    def register_app(self, appid: str, secret: str) -> None:
        self.apps[appid] = secret

    # -- codes ---------------------------------------------------------------------------
    def mint_login_code(
        self, openid: str | None = None, unionid: str | None = None, appid: str | None = None
    ) -> str:
        """What wx.login would give this user (a fresh openid when none is given)."""
        code = _random_code()
        self.login_codes[code] = _Code(
            appid=appid or self.appid,
            openid=openid or _random_openid(),
            unionid=unionid,
            created_at=self.time(),
        )
        return code

    def mint_phone_code(
        self, openid: str, phone: str, appid: str | None = None, country_code: str = "86"
    ) -> str:
        """What the getPhoneNumber button would give this user."""
        code = _random_code()
        self.phone_codes[code] = _Code(
            appid=appid or self.appid,
            openid=openid,
            phone=phone,
            country_code=country_code,
            created_at=self.time(),
        )
        return code

    def _redeem(self, codes: dict[str, _Code], code: str, appid: str, reuse_errcode: int) -> Any:
        """The record of ``code``, or the errcode the real API gives for it."""
        record = codes.get(code)
        if record is None or record.appid != appid:
            return 40029
        if self.time() - record.created_at > CODE_TTL_S:
            return 40029
        if record.used:
            return reuse_errcode
        record.used = True
        return record

    # -- tokens --------------------------------------------------------------------------
    def _issue(self, appid: str, kind: str) -> str:
        token = "EMU_" + secrets.token_urlsafe(96)
        self.tokens[token] = _Token(appid=appid, kind=kind, expires_at=self.time() + TOKEN_TTL_S)
        self.token_issues += 1
        self.token_issues_by_api[kind] += 1
        return token

    def issue_plain_token(self, appid: str) -> tuple[str, int]:
        """cgi-bin/token: each call issues a new token; the one before stays usable 5 min."""
        now = self.time()
        old = self._plain.get(appid)
        if old in self.tokens:
            record = self.tokens[old]
            record.expires_at = min(record.expires_at, now + TOKEN_HANDOVER_S)
        token = self._issue(appid, "token")
        self._plain[appid] = token
        return token, TOKEN_TTL_S

    def issue_stable_token(self, appid: str, force_refresh: bool = False) -> tuple[str, int]:
        """cgi-bin/stable_token semantics.

        Normal mode returns the current token while more than 5 minutes remain; in the
        last 5 minutes a new one is issued and the old one lives out its time. Force
        refresh invalidates the current token at once and issues a new one, unless the
        previous force refresh was less than 30 s ago.
        """
        now = self.time()
        current = self._stable.get(appid)
        record = self.tokens.get(current) if current else None
        remaining = record.expires_at - now if record else 0.0
        if force_refresh:
            last = self._last_force_refresh.get(appid)
            recent = last is not None and now - last < FORCE_REFRESH_MIN_INTERVAL_S
            if record and remaining > 0 and recent:
                return current, int(remaining)
            self._last_force_refresh[appid] = now
            if current:
                self.tokens.pop(current, None)
        elif record and remaining > TOKEN_HANDOVER_S:
            return current, int(remaining)
        token = self._issue(appid, "stable_token")
        self._stable[appid] = token
        return token, TOKEN_TTL_S

    def check_token(self, token: str | None) -> tuple[int, str | None]:
        """(0, appid) for a usable token, else (errcode, None)."""
        if not token:
            return 41001, None
        record = self.tokens.get(token)
        if record is None:
            return 40001, None
        if self.time() >= record.expires_at:
            return 42001, None
        return 0, record.appid

    def expire_tokens(self) -> None:
        """Make every issued token expired (the next API call answers 42001)."""
        now = self.time()
        for record in self.tokens.values():
            record.expires_at = min(record.expires_at, now)

    # -- faults --------------------------------------------------------------------------
    def add_fault(
        self, api: str, errcode: int | None = None, delay_ms: float = 0.0, count: int = 1
    ) -> None:
        if api not in API_NAMES:
            raise ValueError(f"unknown api {api!r}; one of {', '.join(API_NAMES)}")
        if count < 1:
            raise ValueError("count must be at least 1")
        if errcode is None and not delay_ms:
            raise ValueError("a fault needs an errcode, a delay_ms, or both")
        if delay_ms < 0:
            raise ValueError("delay_ms must not be negative")
        if errcode == 0:
            raise ValueError("errcode 0 is success, not a fault")
        self.faults.setdefault(api, deque()).append(_Fault(errcode, float(delay_ms), count))

    def clear_faults(self) -> None:
        self.faults.clear()

    def take_fault(self, api: str) -> _Fault | None:
        queue = self.faults.get(api)
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.popleft()
        return fault

    # -- messages, stats -----------------------------------------------------------------
    def record_message(self, body: dict[str, Any]) -> int:
        self._msgid += 1
        self.messages.append(
            {
                "msgid": self._msgid,
                "touser": body["touser"],
                "template_id": body["template_id"],
                "page": body.get("page"),
                "data": body["data"],
                "miniprogram_state": body.get("miniprogram_state", "formal"),
                "lang": body.get("lang", "zh_CN"),
                "sent_at": datetime.fromtimestamp(self.time(), UTC).isoformat(),
            }
        )
        return self._msgid

    def messages_for(
        self, touser: str | None = None, template_id: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if (touser is None or m["touser"] == touser)
            and (template_id is None or m["template_id"] == template_id)
        ]

    def stats(self) -> dict[str, Any]:
        return {
            "calls": {api: self.calls[api] for api in API_NAMES},
            "errors": {api: self.errors[api] for api in API_NAMES},
            "token_issues": self.token_issues,
            "token_issues_by_api": {
                "token": self.token_issues_by_api["token"],
                "stable_token": self.token_issues_by_api["stable_token"],
            },
            "messages": len(self.messages),
            "pending_faults": {
                api: sum(f.remaining for f in queue) for api, queue in self.faults.items() if queue
            },
        }

    def config(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "latency_apis": sorted(self.latency_apis),
            "banned_words": dict(self.banned_words),
            "review_words": dict(self.review_words),
            "clock_offset_s": self.clock_offset,
            "now": datetime.fromtimestamp(self.time(), UTC).isoformat(),
        }


def _random_code() -> str:
    return secrets.token_urlsafe(24)[:32]


def _random_openid() -> str:
    return "o" + secrets.token_urlsafe(21)[:27]


def _session_key() -> str:
    return base64.b64encode(secrets.token_bytes(16)).decode("ascii")


@functools.lru_cache(maxsize=256)
def _qr_png(content: str, width: int) -> bytes:
    qr = segno.make(content, micro=False)
    modules = qr.symbol_size(scale=1, border=4)[0]
    out = io.BytesIO()
    qr.save(out, kind="png", scale=max(1, width // modules), border=4)
    return out.getvalue()


# ---------------------------------------------------------------------------------------
# handlers
# ---------------------------------------------------------------------------------------


class _BaseHandler(tornado.web.RequestHandler):
    def initialize(self, state: EmulatorState) -> None:
        self.state = state

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; encoding=utf-8")
        self.finish(json.dumps(payload, ensure_ascii=False))

    def json_body(self) -> Any:
        """The parsed JSON body, or None when it is absent or not JSON."""
        if not self.request.body:
            return None
        try:
            return json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError):
            return None


class _WxHandler(_BaseHandler):
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


# -- /__emulator__/ ---------------------------------------------------------------------


class _ControlHandler(_BaseHandler):
    def bad_request(self, message: str) -> None:
        self.write_json({"error": {"code": "invalid_request", "message": message}}, status=400)

    def body_dict(self) -> dict[str, Any] | None:
        body = self.json_body()
        if body is None and not self.request.body:
            return {}
        if not isinstance(body, dict):
            self.bad_request("请求体必须是 JSON 对象")
            return None
        return body


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value or None


class MintJsCodeHandler(_ControlHandler):
    def post(self) -> None:
        body = self.body_dict()
        if body is None:
            return
        try:
            openid = _optional_str(body, "openid")
            unionid = _optional_str(body, "unionid")
            appid = _optional_str(body, "appid")
        except ValueError as exc:
            return self.bad_request(str(exc))
        code = self.state.mint_login_code(openid, unionid, appid)
        self.write_json({"code": code})


class MintPhoneCodeHandler(_ControlHandler):
    def post(self) -> None:
        body = self.body_dict()
        if body is None:
            return
        try:
            openid = _optional_str(body, "openid")
            phone = _optional_str(body, "phone")
            appid = _optional_str(body, "appid")
            country = _optional_str(body, "country_code") or "86"
        except ValueError as exc:
            return self.bad_request(str(exc))
        if not openid or not phone:
            return self.bad_request("openid 和 phone 都必须提供")
        self.write_json({"code": self.state.mint_phone_code(openid, phone, appid, country)})


class MessagesHandler(_ControlHandler):
    def get(self) -> None:
        items = self.state.messages_for(
            self.get_query_argument("touser", None), self.get_query_argument("template_id", None)
        )
        self.write_json({"items": items})

    def delete(self) -> None:
        self.state.messages.clear()
        self.write_json({"items": []})


class FaultsHandler(_ControlHandler):
    def get(self) -> None:
        self.write_json(
            {
                "items": [
                    {"api": api, "errcode": f.errcode, "delay_ms": f.delay_ms, "count": f.remaining}
                    for api, queue in self.state.faults.items()
                    for f in queue
                ]
            }
        )

    def post(self) -> None:
        body = self.body_dict()
        if body is None:
            return
        errcode, delay_ms, count = (
            body.get("errcode"),
            body.get("delay_ms", 0),
            body.get("count", 1),
        )
        if errcode is not None and (not isinstance(errcode, int) or isinstance(errcode, bool)):
            return self.bad_request("errcode 必须是整数")
        if not isinstance(delay_ms, int | float) or isinstance(delay_ms, bool):
            return self.bad_request("delay_ms 必须是数字")
        if not isinstance(count, int) or isinstance(count, bool):
            return self.bad_request("count 必须是整数")
        try:
            self.state.add_fault(str(body.get("api")), errcode, delay_ms, count)
        except ValueError as exc:
            return self.bad_request(str(exc))
        self.write_json({"ok": True})

    def delete(self) -> None:
        self.state.clear_faults()
        self.write_json({"ok": True})


class ConfigHandler(_ControlHandler):
    def get(self) -> None:
        self.write_json(self.state.config())

    def post(self) -> None:
        body = self.body_dict()
        if body is None:
            return
        state = self.state
        if "latency_ms" in body:
            latency = body["latency_ms"]
            if not isinstance(latency, int | float) or isinstance(latency, bool) or latency < 0:
                return self.bad_request("latency_ms 必须是非负数")
            state.latency_ms = float(latency)
        if "latency_apis" in body:
            apis = body["latency_apis"]
            if not isinstance(apis, list) or any(a not in API_NAMES for a in apis):
                return self.bad_request(f"latency_apis 只能包含 {', '.join(API_NAMES)}")
            state.latency_apis = set(apis)
        for key in ("banned_words", "review_words"):
            if key in body:
                words = body[key]
                if not isinstance(words, dict) or not all(
                    isinstance(w, str) and isinstance(label, int) for w, label in words.items()
                ):
                    return self.bad_request(f"{key} 必须是 {{词: label}}")
                setattr(state, key, dict(words))
        self.write_json(state.config())


class ClockHandler(_ControlHandler):
    def get(self) -> None:
        self.write_json(self.state.config())

    def post(self) -> None:
        body = self.body_dict()
        if body is None:
            return
        advance = body.get("advance_s")
        if not isinstance(advance, int | float) or isinstance(advance, bool) or advance < 0:
            return self.bad_request("advance_s 必须是非负数")
        self.state.advance(advance)
        self.write_json(self.state.config())


class ExpireTokensHandler(_ControlHandler):
    def post(self) -> None:
        self.state.expire_tokens()
        self.write_json({"ok": True})


class ResetHandler(_ControlHandler):
    def post(self) -> None:
        self.state.reset()
        self.write_json({"ok": True})


class StatsHandler(_ControlHandler):
    def get(self) -> None:
        self.write_json(self.state.stats())


_SECRET_PARAMS = frozenset({"access_token", "secret", "js_code", "code"})


def _redact_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if not parts.query:
        return uri
    query = [
        (k, "***" if k in _SECRET_PARAMS else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return f"{parts.path}?{urlencode(query, safe='*')}"


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log line, with secrets, tokens and codes masked."""
    status = handler.get_status()
    if status < 400:
        log_method = access_log.info
    elif status < 500:
        log_method = access_log.warning
    else:
        log_method = access_log.error
    request = handler.request
    log_method(
        "%d %s %s (%s) %.2fms",
        status,
        request.method,
        _redact_uri(request.uri or ""),
        request.remote_ip,
        1000.0 * request.request_time(),
    )


def make_emulator_app(
    state: EmulatorState | None = None, **settings: Any
) -> tornado.web.Application:
    """The emulator as a Tornado application; the state is at ``app.settings["emulator_state"]``."""
    state = state or EmulatorState()
    kw = {"state": state}
    routes = [
        (r"/cgi-bin/token", TokenHandler, kw),
        (r"/cgi-bin/stable_token", StableTokenHandler, kw),
        (r"/sns/jscode2session", JsCode2SessionHandler, kw),
        (r"/wxa/business/getuserphonenumber", PhoneNumberHandler, kw),
        (r"/cgi-bin/message/subscribe/send", SubscribeSendHandler, kw),
        (r"/wxa/msg_sec_check", MsgSecCheckHandler, kw),
        (r"/wxa/getwxacodeunlimit", WxaCodeUnlimitHandler, kw),
        (r"/__emulator__/jscode", MintJsCodeHandler, kw),
        (r"/__emulator__/phonecode", MintPhoneCodeHandler, kw),
        (r"/__emulator__/messages", MessagesHandler, kw),
        (r"/__emulator__/faults", FaultsHandler, kw),
        (r"/__emulator__/config", ConfigHandler, kw),
        (r"/__emulator__/clock", ClockHandler, kw),
        (r"/__emulator__/expire_tokens", ExpireTokensHandler, kw),
        (r"/__emulator__/reset", ResetHandler, kw),
        (r"/__emulator__/stats", StatsHandler, kw),
    ]
    settings.setdefault("log_function", _log_request)
    return tornado.web.Application(routes, emulator_state=state, **settings)


def start_emulator(
    port: int = 0,
    host: str = "127.0.0.1",
    state: EmulatorState | None = None,
    *,
    backlog: int = 2048,
) -> tuple[HTTPServer, EmulatorState, int]:
    """Listen on ``host:port`` (0: any free port) in the running event loop.

    Returns the server (``server.stop()`` to stop listening), the state and the port.
    The listen backlog is large so that bursts of hundreds of new connections are
    not reset.
    """
    state = state or EmulatorState()
    sockets = bind_sockets(port, host, backlog=backlog)
    server = HTTPServer(make_emulator_app(state))
    server.add_sockets(sockets)
    return server, state, sockets[0].getsockname()[1]
