"""Signing in to the staff console: the mini-program, having scanned the console's code (scene
`login:<nonce>`) and asked "登录 ikepu 管理台?", confirms with the user's token."""

from __future__ import annotations

import msgspec

from server.domain import console_sessions
from server.web import BaseHandler, operation


class ConsoleLoginConfirmed(msgspec.Struct):
    status: str = "confirmed"


class ConsoleLoginHandler(BaseHandler):
    @operation(
        "Confirm a staff console sign-in from its scanned code (staff only); the waiting console "
        "page is signed in as this user",
        response=ConsoleLoginConfirmed,
        errors=(403, 404, 409),
    )
    async def post(self, nonce: str) -> None:
        await console_sessions.confirm(self.ctx, self.user_id, nonce)
        self.reply(ConsoleLoginConfirmed())


ROUTES = [
    (rf"/mp/v1/console-login/(?P<nonce>{console_sessions.NONCE_PATTERN})", ConsoleLoginHandler),
]
