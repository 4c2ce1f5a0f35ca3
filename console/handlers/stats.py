"""统计: an organisation subtree's report for a year or a span of days (the same `stats.report`
as `GET /api/v1/stats/annual`, with the same query and the same checks), its charts and top
tens, and the same workbook and CSV files as the API."""

from __future__ import annotations

from console.handlers.staff import StaffPage, parse_form
from handlers.stats import AnnualQuery
from server.domain import access, orgs, stats
from server.web import XLSX

READ = "stats.read"
TABLE_NAMES = {
    "summary": "总览",
    "months": "按月",
    "counties": "按县区",
    "top_volunteers": "志愿者前十",
    "top_teams": "队伍前十",
    "top_sites": "站点前十",
    "top_projects": "项目前十",
}
YEARS_SHOWN = 6  # the picker's years, this one and those before it


class StatsBase(StaffPage):
    nav = "stats"

    async def report(self) -> tuple[stats.Report, AnnualQuery, list[orgs.Org]]:
        """The report the query names; without an organisation, that of the highest one where
        the caller holds the permission (the API's default, the root, is only the province's)."""
        await self.require_anywhere(READ)
        values = {k: self.arg(k) for k in ("org_id", "year", "from", "to", "table")}
        q = parse_form(AnnualQuery, {k: v for k, v in values.items() if v is not None})
        readers = access.roles_holding(READ)
        held = {
            g["org_id"]
            for g in await access.grants_of(self.ctx, self.staff_id)
            if g["role"] in readers and not g.get("site_id")
        }
        choices = sorted(await orgs.describe(self.ctx, sorted(held)), key=lambda o: o.depth)
        org_id = q.org_id or choices[0].id
        await self.require(READ, org_id)
        today = self.ctx.clock.local_now().date()
        period = stats.parse_period(q.year, q.first, q.last, today)
        return await stats.report(self.ctx, org_id, period), q, choices


class StatsPage(StatsBase):
    async def get(self) -> None:
        report, _, choices = await self.report()
        this_year = self.ctx.clock.local_now().year
        self.render(
            "stats.html",
            r=report,
            choices=choices,
            years=list(range(this_year, this_year - YEARS_SHOWN, -1)),
            tables=TABLE_NAMES,
        )


class WorkbookPage(StatsBase):
    async def get(self) -> None:
        report, _, _ = await self.report()
        body = await self.ctx.run_blocking(stats.report_workbook, report)
        self.set_header("Content-Type", XLSX)
        name = f"stats-{report.first}-{report.last}.xlsx"
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(body)


class CsvPage(StatsBase):
    async def get(self) -> None:
        report, q, _ = await self.report()
        self.set_header("Content-Type", "text/csv")
        name = f"stats-{report.first}-{report.last}-{q.table}.csv"
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(stats.report_csv(report, q.table))


ROUTES = [
    (r"/console/stats", StatsPage),
    (r"/console/stats/report\.xlsx", WorkbookPage),
    (r"/console/stats/report\.csv", CsvPage),
]
