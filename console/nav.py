"""The console's navigation: every built page, in the order the sidebar shows them.

A new page adds one `Page` here (its absolute path, and the permission whose holders see the
link, or several any of which will do; None: every staff member) and its routes to
`console.ROUTES`; its handler sets `nav` to the page's key so the sidebar marks it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Page:
    key: str
    title: str
    path: str
    permission: str | tuple[str, ...] | None = None

    @property
    def permissions(self) -> tuple[str, ...]:
        if self.permission is None:
            return ()
        return (self.permission,) if isinstance(self.permission, str) else self.permission


NAV: list[Page] = [
    Page("home", "首页", "/console/"),
    Page("orgs", "组织与人员", "/console/orgs", "org.read"),
    Page("sites", "站点", "/console/sites", "site.read"),
    Page("activities", "活动", "/console/activities", "activity.organise"),
    Page("plans", "排程", "/console/plans", "plan.dispatch"),
    Page("visit_requests", "走访申请", "/console/visit-requests", "visit.read"),
    Page("fleet", "车队", "/console/fleet", "fleet.manage"),
    Page("trips", "出车记录", "/console/trips", ("trip.log", "visit.confirm")),
    Page("kpis", "指标", "/console/kpis", "plan.dispatch"),
    Page("hours", "服务时长", "/console/hours", "hours.confirm"),
    Page("stats", "统计", "/console/stats", "stats.read"),
]
