"""首页: the caller's scope at a glance (server/domain/dashboard.py decides what each may see)."""

from __future__ import annotations

from console.handlers.base import ConsoleHandler
from server.domain import dashboard


class HomeHandler(ConsoleHandler):
    nav = "home"

    async def get(self) -> None:
        org_id = self.get_query_argument("org_id", None) or None
        overview = await dashboard.overview(self.ctx, self.staff_id, org_id)
        self.render("home.html", o=overview)


class ConsoleRootHandler(ConsoleHandler):
    requires_staff = False

    async def get(self) -> None:
        self.redirect("/console/", permanent=True)


ROUTES = [
    (r"/console/", HomeHandler),
    (r"/console", ConsoleRootHandler),
]
