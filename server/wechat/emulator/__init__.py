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
- ``POST /__emulator__/subscriptions {"openid", "accepted": [template_id, ...]}``: what the
  user's taps in wx.requestSubscribeMessage record; each accept allows one message, and a
  send beyond them is refused with 43101, as at WeChat
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

Modules
-------
* :mod:`~server.wechat.emulator.state`: :class:`EmulatorState` (apps, tokens, codes,
  messages, faults, counters, run-time config, the clock) and the constants it works with
  (default app, ``API_NAMES``, lifetimes, default banned and review words).
* :mod:`~server.wechat.emulator.base`: the handler base both sets of endpoints share (the
  state, JSON in and out).
* :mod:`~server.wechat.emulator.wechat_api`: the WeChat API handlers (token, stable_token,
  jscode2session, getuserphonenumber, subscribe send, msg_sec_check, getwxacodeunlimit) with
  the real errcodes and errmsgs and the validation rules of each call.
* :mod:`~server.wechat.emulator.control`: the ``/__emulator__/`` handlers.
* :mod:`~server.wechat.emulator.app`: :func:`make_emulator_app` (the route table, an access
  log that masks secrets) and :func:`start_emulator`.

What callers use is re-exported here.
"""

from server.wechat.emulator.app import make_emulator_app, start_emulator
from server.wechat.emulator.state import (
    API_NAMES,
    DEFAULT_APPID,
    DEFAULT_SECRET,
    EmulatorState,
)

__all__ = [
    "API_NAMES",
    "DEFAULT_APPID",
    "DEFAULT_SECRET",
    "EmulatorState",
    "make_emulator_app",
    "start_emulator",
]
