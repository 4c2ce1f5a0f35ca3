"""The emulator's state: everything it has issued, received and been configured with, in
memory, and the constants of its tokens and codes."""

from __future__ import annotations

import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
        #: one-time subscriptions the users accepted (wx.requestSubscribeMessage), by
        #: (openid, template_id); each allows one message, as at WeChat.
        self.subscriptions: Counter[tuple[str, str]] = Counter()
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
    def accept_subscriptions(self, openid: str, template_ids: Iterable[str]) -> None:
        for template_id in template_ids:
            self.subscriptions[(openid, template_id)] += 1

    def use_subscription(self, openid: str, template_id: str) -> bool:
        """Spend one accepted subscription; False when there is none left (WeChat's 43101)."""
        if self.subscriptions[(openid, template_id)] <= 0:
            return False
        self.subscriptions[(openid, template_id)] -= 1
        return True

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
