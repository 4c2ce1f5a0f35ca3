"""The ``/__emulator__/`` endpoints for tests and development: mint codes, read sent
messages, inject faults, change the configuration and the clock, expire tokens, read stats,
reset."""

from __future__ import annotations

from typing import Any

from server.wechat.emulator.base import BaseHandler
from server.wechat.emulator.state import API_NAMES


class _ControlHandler(BaseHandler):
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


class SubscriptionsHandler(_ControlHandler):
    """What the user's taps in wx.requestSubscribeMessage record at WeChat."""

    def post(self) -> None:
        body = self.body_dict()
        if body is None:
            return
        openid, accepted = body.get("openid"), body.get("accepted")
        if not isinstance(openid, str) or not openid:
            return self.bad_request("openid 必须提供")
        if not isinstance(accepted, list) or not all(isinstance(t, str) and t for t in accepted):
            return self.bad_request("accepted 必须是模板 ID 的列表")
        self.state.accept_subscriptions(openid, accepted)
        remaining = {t: self.state.subscriptions[(openid, t)] for t in sorted(set(accepted))}
        self.write_json({"openid": openid, "remaining": remaining})


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
