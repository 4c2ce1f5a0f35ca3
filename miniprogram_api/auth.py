"""Sign-in from the mini-program: WeChat login, token refresh, sign-out, phone binding."""

from __future__ import annotations

from typing import Annotated

import msgspec

from server.domain import identity
from server.domain.text import whole
from server.web import BaseHandler, operation

# What wx.login gives: printable ASCII, never blank nor a control character (both reach WeChat
# as a missing code, 41008).
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=whole(r"[!-~]+"))]
# As ``secrets.token_urlsafe`` writes them.
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=512, pattern=whole(r"[A-Za-z0-9_-]+"))]


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    code: Code


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Token


class LogoutRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Token | None = None


class LogoutResult(msgspec.Struct):
    revoked: int


class PhoneRequest(msgspec.Struct, forbid_unknown_fields=True):
    code: Code


class PhoneResult(msgspec.Struct):
    phone_masked: str


class LoginHandler(BaseHandler):
    @operation(
        "Sign in with the code from wx.login",
        body=LoginRequest,
        response=identity.Session,
        auth=False,
        errors=(403, 429, 502),
    )
    async def post(self) -> None:
        self.reply(await identity.login(self.ctx, self.body.code, self.client_ip))


class RefreshHandler(BaseHandler):
    @operation(
        "A new access token from a refresh token",
        body=RefreshRequest,
        response=identity.Session,
        auth=False,
        errors=(403,),
    )
    async def post(self) -> None:
        self.reply(await identity.refresh(self.ctx, self.body.refresh_token))


class LogoutHandler(BaseHandler):
    @operation(
        "Sign out: revoke this refresh token, or all of the user's",
        body=LogoutRequest,
        response=LogoutResult,
    )
    async def post(self) -> None:
        revoked = await identity.logout(self.ctx, self.principal, self.body.refresh_token)
        self.reply(LogoutResult(revoked=revoked))


class PhoneHandler(BaseHandler):
    @operation(
        "Bind the phone number from the getPhoneNumber button",
        body=PhoneRequest,
        response=PhoneResult,
        errors=(502,),
    )
    async def post(self) -> None:
        masked = await identity.bind_phone(self.ctx, self.principal, self.body.code)
        self.reply(PhoneResult(phone_masked=masked))


ROUTES = [
    (r"/mp/v1/auth/login", LoginHandler),
    (r"/mp/v1/auth/refresh", RefreshHandler),
    (r"/mp/v1/auth/logout", LogoutHandler),
    (r"/mp/v1/auth/phone", PhoneHandler),
]
