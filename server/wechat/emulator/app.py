"""The emulator as a Tornado application, and a server for it in the running event loop."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.log import access_log
from tornado.netutil import bind_sockets

from server.wechat.emulator.control import (
    ClockHandler,
    ConfigHandler,
    ExpireTokensHandler,
    FaultsHandler,
    MessagesHandler,
    MintJsCodeHandler,
    MintPhoneCodeHandler,
    ResetHandler,
    StatsHandler,
    SubscriptionsHandler,
)
from server.wechat.emulator.state import EmulatorState
from server.wechat.emulator.wechat_api import (
    JsCode2SessionHandler,
    MsgSecCheckHandler,
    PhoneNumberHandler,
    StableTokenHandler,
    SubscribeSendHandler,
    TokenHandler,
    WxaCodeUnlimitHandler,
)

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
        (r"/__emulator__/subscriptions", SubscriptionsHandler, kw),
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
