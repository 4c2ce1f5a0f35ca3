"""The base of every console page: the session cookie, XSRF on every form, the security headers,
and error pages in HTML (a 403 says why; a 404 is a page, not a blank)."""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Any

import tornado.web
from bson import ObjectId
from bson.errors import InvalidId

from console.nav import NAV, Page
from server.clock import SHANGHAI
from server.domain import access, console_sessions, identity
from server.domain.errors import DomainError
from server.web import BaseHandler
from server.web.base import MESSAGE_OF_STATUS

SESSION_COOKIE = "ikepu_console"
LOGIN_PATH = "/console/login"
# Only the service's own scripts and styles; no inline script, no inline event handler; never
# inside a frame.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
STATUS_TEXT = {
    403: "没有权限",
    404: "页面不存在",
    500: "服务器内部错误",
    503: "服务暂不可用",
}


def local_time(moment: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A time as staff read it: Asia/Shanghai."""
    return moment.astimezone(SHANGHAI).strftime(fmt) if moment else "—"


class ConsoleHandler(BaseHandler):
    nav: str | None = None  # the key of this page's entry in console.nav.NAV
    requires_staff = True  # False for the sign-in pages

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Cache-Control", "no-store")

    async def prepare(self) -> None:
        await super().prepare()
        self.staff_id: ObjectId | None = None
        self.staff_name = ""
        self.pages: list[Page] = []
        self.session_id = self._session_id()
        if self.session_id is not None:
            self.staff_id = await console_sessions.staff_user(self.ctx, self.session_id)
            if self.staff_id is None:
                self.clear_cookie(SESSION_COOKIE, path="/console/")
        # The JSON API is bearer-token and needs none; every console form carries the token.
        if self.request.method not in ("GET", "HEAD"):
            self.check_xsrf_cookie()
        if self.staff_id is not None:
            await self._describe_staff()
        elif self.requires_staff:
            self.to_login()

    def _session_id(self) -> ObjectId | None:
        raw = self.get_signed_cookie(SESSION_COOKIE)
        try:
            return ObjectId(raw.decode()) if raw else None
        except (InvalidId, UnicodeDecodeError):
            return None

    def start_session(self, session_id: ObjectId) -> None:
        self.set_signed_cookie(
            SESSION_COOKIE,
            str(session_id),
            expires_days=None,  # the browser forgets it when closed; the server after 8 h idle
            path="/console/",
            httponly=True,
            samesite="Lax",
            secure=self.over_tls,
        )

    def to_login(self) -> None:
        if self.request.headers.get("HX-Request"):
            # htmx swaps a fragment in; the whole page must go to the sign-in. A 200: htmx
            # follows the header either way, and the browser logs no failed request.
            self.set_header("HX-Redirect", LOGIN_PATH)
            self.finish()
        else:
            self.redirect(LOGIN_PATH)

    async def _describe_staff(self) -> None:
        brief = (await identity.briefs(self.ctx, [self.staff_id])).get(self.staff_id, {})
        self.staff_name = brief.get("real_name") or brief.get("phone_masked") or "工作人员"
        roles = {g["role"] for g in await access.grants_of(self.ctx, self.staff_id)}
        self.pages = [
            p
            for p in NAV
            if p.permission is None
            or any(roles & access.roles_holding(name) for name in p.permissions)
        ]

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(
            pages=getattr(self, "pages", []),
            current=self.nav,
            staff_name=getattr(self, "staff_name", ""),
            signed_in=getattr(self, "staff_id", None) is not None,
            local_time=local_time,
            xsrf_token=self.xsrf_token.decode(),
        )
        return namespace

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, DomainError):
            message = exc.message
        elif status_code == 403:
            message = "页面已过期，请刷新后重试"  # the XSRF check refused the form
        else:
            message = MESSAGE_OF_STATUS.get(status_code) or HTTPStatus(status_code).phrase
        self.render(
            "error.html",
            status=status_code,
            title=STATUS_TEXT.get(status_code, HTTPStatus(status_code).phrase),
            message=message,
        )


class ConsoleNotFoundHandler(ConsoleHandler):
    """Any other path under /console/: the 404 page (with the navigation when signed in)."""

    requires_staff = False

    async def prepare(self) -> None:
        await super().prepare()
        raise tornado.web.HTTPError(404)
