"""Signing in by scanning the mini-program code, and signing out.

The login page starts an attempt and keeps its nonce in a signed cookie of this browser; the
code image and the poll read it from there, so the nonce appears in no URL and only this
browser can take the session the scan confirms. With the emulator the page also offers the
development form: an openid, and Enter performs the scan as that user.
"""

from __future__ import annotations

from console.handlers.base import SESSION_COOKIE, ConsoleHandler
from server.domain import console_sessions
from server.domain.errors import DomainError
from server.web.base import STATUS_OF_KIND

LOGIN_COOKIE = "ikepu_console_login"
HOME = "/console/"
STOP_POLLING = 286  # htmx stops an `every` trigger on this status


class LoginPageHandler(ConsoleHandler):
    requires_staff = False

    async def get(self) -> None:
        if self.staff_id is not None:
            self.redirect(HOME)
            return
        await self.show_login()

    async def show_login(self, refusal: str | None = None) -> None:
        """A new attempt: its code, the poll, and (emulator only) the development form."""
        attempt = await console_sessions.begin(self.ctx)
        self.set_signed_cookie(
            LOGIN_COOKIE,
            attempt.nonce,
            expires_days=None,
            path="/console/login",
            httponly=True,
            samesite="Lax",
            secure=self.over_tls,
        )
        self.render(
            "login.html",
            expires_at=attempt.expires_at,
            refusal=refusal,
            development=self.ctx.settings.uses_wechat_emulator,
        )

    def nonce(self) -> str:
        raw = self.get_signed_cookie(LOGIN_COOKIE, max_age_days=1)
        return raw.decode() if raw else ""


class LoginCodeHandler(LoginPageHandler):
    """The mini-program code of this browser's attempt, scene `login:<nonce>`."""

    async def get(self) -> None:
        png = await console_sessions.code_png(self.ctx, self.nonce())
        self.set_header("Content-Type", "image/png")
        self.finish(png)


class LoginStatusHandler(LoginPageHandler):
    """Polled by the login page every 2 s until the scan is confirmed, refused or expired."""

    async def get(self) -> None:
        claim = await console_sessions.claim(self.ctx, self.nonce())
        if claim.status == "signed_in":
            self.start_session(claim.session_id)
            self.clear_cookie(LOGIN_COOKIE, path="/console/login")
            self.set_header("HX-Redirect", HOME)
            self.finish()
            return
        if claim.status != "pending":
            self.set_status(STOP_POLLING)
        self.render("login_status.html", status=claim.status, refusal=console_sessions.REFUSAL)


class DevelopmentLoginHandler(LoginPageHandler):
    """The emulator's stand-in for scanning: performs the scan as the openid typed in."""

    async def post(self) -> None:
        openid = self.get_body_argument("openid", "").strip()
        try:
            claim = await console_sessions.development_scan(self.ctx, self.nonce(), openid)
        except DomainError as refused:
            self.set_status(STATUS_OF_KIND[refused.kind])
            await self.show_login(refusal=refused.message)
            return
        if claim.status != "signed_in":
            self.redirect("/console/login")
            return
        self.start_session(claim.session_id)
        self.clear_cookie(LOGIN_COOKIE, path="/console/login")
        self.redirect(HOME, status=303)


class LogoutHandler(ConsoleHandler):
    requires_staff = False

    async def post(self) -> None:
        if self.session_id is not None:
            await console_sessions.sign_out(self.ctx, self.session_id)
        self.clear_cookie(SESSION_COOKIE, path="/console/")
        self.redirect("/console/login", status=303)


ROUTES = [
    (r"/console/login", LoginPageHandler),
    (r"/console/login/code\.png", LoginCodeHandler),
    (r"/console/login/status", LoginStatusHandler),
    (r"/console/login/development", DevelopmentLoginHandler),
    (r"/console/logout", LogoutHandler),
]
