"""Async adapter over wechatpy's (blocking) ``WeChatClient``.

Every call runs in a caller-supplied, bounded ``ThreadPoolExecutor``. Each worker
thread has its own ``WeChatClient`` (and so its own ``requests.Session``), pointed at
``api_base_url`` for both the ``cgi-bin/`` and the ``wxa/``/``sns/`` paths.

wechatpy never fetches an access token itself: the token comes from the central
keeper through ``access_token_getter`` and is handed to the thread's client for the
one call. On 40001/40014/42001 the adapter tells the keeper
(``access_token_invalidator(bad_token)``), asks for a fresh token and retries once.

Every failure surfaces as ``WeChatError`` (errcode, errmsg, transient, timeout).
A session_key is never logged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException

log = logging.getLogger(__name__)

T = TypeVar("T")

#: errcodes meaning "this access token is not (or no longer) good".
TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
#: errcodes worth retrying later: system busy, daily quota, minute quota.
TRANSIENT_ERRCODES = frozenset({-1, 45009, 45011})


class WeChatError(Exception):
    """A WeChat API call failed.

    ``errcode``/``errmsg`` as WeChat gave them; -1 for timeouts, connection and HTTP
    errors. ``transient`` says a later retry may succeed (-1, 45009, 45011, timeouts,
    connection errors); ``timeout`` says no answer came in time (the call may still
    have taken effect on WeChat's side).
    """

    def __init__(
        self,
        errcode: int,
        errmsg: str,
        *,
        api: str | None = None,
        timeout: bool = False,
        transient: bool | None = None,
    ) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.api = api
        self.timeout = timeout
        self.transient = (
            (timeout or errcode in TRANSIENT_ERRCODES) if transient is None else transient
        )
        super().__init__(errcode, errmsg)

    @property
    def token_invalid(self) -> bool:
        return self.errcode in TOKEN_ERRCODES

    def __str__(self) -> str:
        where = f"{self.api}: " if self.api else ""
        extra = " (timeout)" if self.timeout else ""
        return f"{where}errcode={self.errcode} errmsg={self.errmsg}{extra}"

    def __repr__(self) -> str:
        return (
            f"WeChatError(errcode={self.errcode!r}, errmsg={self.errmsg!r}, api={self.api!r}, "
            f"transient={self.transient!r}, timeout={self.timeout!r})"
        )


class _NoTokenFetch(RuntimeError):
    pass


class _FedWeChatClient(WeChatClient):
    """A WeChatClient whose access token is whatever the adapter hands it for one call.

    ``fed_token`` None means the call takes no access token: requests then leaves the
    ``access_token`` query parameter out.
    """

    fed_token: str | None = None

    @property
    def access_token(self) -> str | None:  # type: ignore[override]
        return self.fed_token

    def fetch_access_token(self) -> Any:
        raise _NoTokenFetch("access tokens come from the central keeper, never from wechatpy")


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


class WeChatAdapter:
    """Async WeChat API calls for one mini-program (appid)."""

    def __init__(
        self,
        appid: str,
        secret: str,
        api_base_url: str,
        executor: Executor,
        timeout: float,
        access_token_getter: Callable[[], Awaitable[str]] | None = None,
        access_token_invalidator: Callable[[str], Awaitable[Any]] | None = None,
    ) -> None:
        self.appid = appid
        self._secret = secret
        self.api_base_url = api_base_url.rstrip("/") + "/"
        self._executor = executor
        self.timeout = timeout
        self._get_token = access_token_getter
        self._invalidate_token = access_token_invalidator
        self._local = threading.local()
        self._clients: list[_FedWeChatClient] = []
        self._clients_lock = threading.Lock()
        self._trust_env = not _is_loopback(self.api_base_url)

    def __repr__(self) -> str:
        return f"WeChatAdapter(appid={self.appid!r}, api_base_url={self.api_base_url!r})"

    # -- plumbing ------------------------------------------------------------------------
    def _thread_client(self) -> _FedWeChatClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = _FedWeChatClient(
                self.appid, self._secret, timeout=self.timeout, auto_retry=False
            )
            # WeChatClient's base is .../cgi-bin/; WeChatWxa's own base is the host root.
            client.API_BASE_URL = self.api_base_url + "cgi-bin/"
            client.wxa.API_BASE_URL = self.api_base_url
            client._http.trust_env = self._trust_env
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _call_in_thread(
        self, api: str, token: str | None, fn: Callable[[_FedWeChatClient], T]
    ) -> T:
        client = self._thread_client()
        client.fed_token = token
        try:
            return fn(client)
        except WeChatClientException as exc:
            if exc.errcode is None:  # HTTP status error (wechatpy's raise_for_status)
                status = getattr(exc.response, "status_code", None)
                transient = status is None or status >= 500 or status == 429
                raise WeChatError(-1, f"HTTP {status}", api=api, transient=transient) from None
            raise WeChatError(int(exc.errcode), str(exc.errmsg), api=api) from None
        except requests.Timeout:
            raise WeChatError(-1, "request timed out", api=api, timeout=True) from None
        except requests.ConnectionError as exc:
            timed_out = "timed out" in str(exc).lower()
            msg = "request timed out" if timed_out else "connection error"
            raise WeChatError(-1, msg, api=api, timeout=timed_out, transient=True) from None
        except requests.RequestException as exc:
            raise WeChatError(
                -1, f"request failed: {type(exc).__name__}", api=api, transient=True
            ) from None
        finally:
            client.fed_token = None

    async def _run(self, api: str, token: str | None, fn: Callable[[_FedWeChatClient], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, functools.partial(self._call_in_thread, api, token, fn)
            )
        except WeChatError as exc:
            log.warning("wechat %s failed: errcode=%s timeout=%s", api, exc.errcode, exc.timeout)
            raise

    async def _with_token(self, api: str, fn: Callable[[_FedWeChatClient], T]) -> T:
        if self._get_token is None:
            raise RuntimeError("WeChatAdapter needs an access_token_getter for this call")
        token = await self._get_token()
        try:
            return await self._run(api, token, fn)
        except WeChatError as exc:
            if not exc.token_invalid:
                raise
            log.info("wechat %s: access token rejected (%s), refreshing once", api, exc.errcode)
            if self._invalidate_token is not None:
                await self._invalidate_token(token)
            fresh = await self._get_token()
            return await self._run(api, fresh, fn)

    @staticmethod
    def _expect_dict(api: str, result: Any) -> dict[str, Any]:
        if not isinstance(result, dict):
            raise WeChatError(-1, "unexpected non-JSON response", api=api, transient=True)
        return result

    # -- API -----------------------------------------------------------------------------
    async def code_to_session(self, js_code: str) -> dict[str, Any]:
        """sns/jscode2session: ``{"openid", "session_key", "unionid"?}``.

        Takes no access token. The result holds the session_key: never log it.
        """
        result = await self._run("jscode2session", None, lambda c: c.wxa.code_to_session(js_code))
        result = self._expect_dict("jscode2session", result)
        if not result.get("openid"):
            raise WeChatError(-1, "jscode2session answered without openid", api="jscode2session")
        return result

    async def fetch_stable_token(self, force_refresh: bool = False) -> tuple[str, int]:
        """cgi-bin/stable_token → (access_token, expires_in seconds). For the token keeper."""
        body = {
            "grant_type": "client_credential",
            "appid": self.appid,
            "secret": self._secret,
            "force_refresh": bool(force_refresh),
        }
        result = await self._run("stable_token", None, lambda c: c.post("stable_token", data=body))
        result = self._expect_dict("stable_token", result)
        token = result.get("access_token")
        if not token:
            raise WeChatError(-1, "stable_token answered without access_token", api="stable_token")
        return token, int(result.get("expires_in", 7200))

    async def get_phone_number(self, code: str) -> dict[str, Any]:
        """wxa/business/getuserphonenumber → ``phone_info``
        (``phoneNumber``, ``purePhoneNumber``, ``countryCode``, ``watermark``)."""
        result = await self._with_token(
            "phone",
            lambda c: c.post(
                "wxa/business/getuserphonenumber",
                data={"code": code},
                api_base_url=self.api_base_url,
            ),
        )
        info = self._expect_dict("phone", result).get("phone_info")
        if not isinstance(info, dict):
            raise WeChatError(-1, "getuserphonenumber answered without phone_info", api="phone")
        return info

    async def send_subscribe_message(
        self,
        touser: str,
        template_id: str,
        data: dict[str, Any],
        page: str | None = None,
        *,
        miniprogram_state: str | None = None,
        lang: str | None = None,
    ) -> int | None:
        """cgi-bin/message/subscribe/send → msgid (None if WeChat gave none)."""
        if miniprogram_state is None and lang is None:

            def call(c: _FedWeChatClient) -> Any:
                return c.wxa.send_subscribe_message(touser, template_id, data, page=page)
        else:
            body: dict[str, Any] = {"touser": touser, "template_id": template_id, "data": data}
            for key, value in (
                ("page", page),
                ("miniprogram_state", miniprogram_state),
                ("lang", lang),
            ):
                if value is not None:
                    body[key] = value

            def call(c: _FedWeChatClient) -> Any:
                return c.post("message/subscribe/send", data=body)

        result = self._expect_dict("subscribe_send", await self._with_token("subscribe_send", call))
        msgid = result.get("msgid")
        return int(msgid) if msgid is not None else None

    async def msg_sec_check(self, content: str, openid: str, scene: int = 1) -> dict[str, Any]:
        """wxa/msg_sec_check v2. Returns WeChat's answer as is: the verdict is
        ``result["result"]["suggest"]`` (pass / review / risky) with ``["result"]["label"]``.
        Scene: 1 profile, 2 comment, 3 forum, 4 social log."""
        body = {"content": content, "version": 2, "scene": scene, "openid": openid}
        result = await self._with_token(
            "msg_sec_check",
            lambda c: c.post("wxa/msg_sec_check", data=body, api_base_url=self.api_base_url),
        )
        return self._expect_dict("msg_sec_check", result)

    async def get_wxacode_unlimited(
        self, scene: str, page: str | None = None, width: int = 430
    ) -> bytes:
        """wxa/getwxacodeunlimit → the image bytes."""
        result = await self._with_token(
            "wxacode", lambda c: c.wxa.get_wxa_code_unlimited(scene, width=width, page=page)
        )
        # wechatpy hands back the requests.Response when the body is not JSON (the image);
        # a JSON body with a non-zero errcode has already been raised as an error.
        if isinstance(result, requests.Response):
            return result.content
        raise WeChatError(-1, "getwxacodeunlimit answered without an image", api="wxacode")

    def close(self) -> None:
        """Close the HTTP sessions of all worker threads' clients."""
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client._http.close()
        self._local = threading.local()
