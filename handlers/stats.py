"""The association's statistics: the annual report as JSON, an .xlsx workbook or CSV."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from server.domain import orgs, stats
from server.domain.errors import NotFound
from server.web import XLSX, BaseHandler, operation


class AnnualQuery(msgspec.Struct, forbid_unknown_fields=True):
    org_id: str | None = None  # the root organisation when absent
    year: Annotated[int, msgspec.Meta(ge=2000, le=2100)] | None = None
    first: str | None = msgspec.field(default=None, name="from")  # YYYY-MM-DD, inclusive
    last: str | None = msgspec.field(default=None, name="to")  # YYYY-MM-DD, inclusive
    format: Literal["json", "xlsx", "csv"] = "json"
    table: Literal[stats.TABLES] = "summary"  # which table format=csv gives


class AnnualReportHandler(BaseHandler):
    @operation(
        "Figures of an organisation's subtree for a year (roll-ups) or any period (recounted): "
        "totals, per month, per county and the top tens; format=xlsx or csv for files",
        query=AnnualQuery,
        response=stats.Report,
        content_types=(XLSX, "text/csv"),
        errors=(400, 403, 404),
        permission="stats.read",
    )
    async def get(self) -> None:
        q = self.query
        if q.org_id is None:
            root = await orgs.root_org(self.ctx)
            if root is None:
                raise NotFound("还没有根组织", field="org_id")
            org_id = root["_id"]
        else:
            org_id = q.org_id
        await self.authorize(org_id)
        period = stats.parse_period(q.year, q.first, q.last, self.ctx.clock.local_now().date())
        report = await stats.report(self.ctx, org_id, period)
        name = f"stats-{report.first}-{report.last}"
        if q.format == "xlsx":
            body = await self.ctx.run_blocking(stats.report_workbook, report)
            self.send_file(body, XLSX, f"{name}.xlsx")
        elif q.format == "csv":
            body = stats.report_csv(report, q.table)
            self.send_file(body, "text/csv", f"{name}-{q.table}.csv")
        else:
            self.reply(report)


ROUTES = [(r"/api/v1/stats/annual", AnnualReportHandler)]
