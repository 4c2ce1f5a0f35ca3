"""The handler base of the emulator's endpoints: the state, JSON in and out."""

from __future__ import annotations

import json
from typing import Any

import tornado.web

from server.wechat.emulator.state import EmulatorState


class BaseHandler(tornado.web.RequestHandler):
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
