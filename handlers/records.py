"""Service records for the national volunteer systems: the export workbooks and their log."""

from __future__ import annotations

from typing import Annotated

import msgspec

from server.domain import national_records, stats
from server.web import XLSX, BaseHandler, ListQuery, operation


class ExportQuery(msgspec.Struct, forbid_unknown_fields=True):
    org_id: str
    form: national_records.FormKey
    year: Annotated[int, msgspec.Meta(ge=2000, le=2100)] | None = None
    first: str | None = msgspec.field(default=None, name="from")  # YYYY-MM-DD, inclusive
    last: str | None = msgspec.field(default=None, name="to")  # YYYY-MM-DD, inclusive
    masked: bool = False  # ID numbers masked even for a caller who may have them in full


class ExportHandler(BaseHandler):
    @operation(
        "An organisation's (and its subtree's) confirmed service records of a year or period as "
        "a workbook in a national system's form: form=cast (中国科协科技志愿服务信息平台) or "
        "chinavolunteer (中国志愿服务网). Records lacking identity items are on the sheet 待补全; "
        "ID numbers are in full only with records.export_identity, else masked. Every export is "
        "logged (X-Export-Id names the entry)",
        query=ExportQuery,
        content_type=XLSX,
        errors=(400, 403, 404),
        permission="records.export",
    )
    async def get(self) -> None:
        q = self.query
        await self.authorize(q.org_id)
        today = self.ctx.clock.local_now().date()
        period = stats.parse_period(q.year, q.first, q.last, today)
        export = await national_records.export(
            self.ctx, self.user_id, q.org_id, q.form, period, masked=q.masked
        )
        self.set_header("X-Export-Id", export.export_id)
        self.set_header("Cache-Control", "no-store")
        self.send_file(export.body, XLSX, export.filename)


class ExportLogHandler(BaseHandler):
    @operation(
        "The log of service-record exports in the caller's scope, newest first: who, when, "
        "which organisation, form and period, ID numbers in full or masked, rows",
        query=ListQuery,
        response=national_records.ExportPage,
        errors=(400, 403, 404),
        permission="records.export_identity",
    )
    async def get(self) -> None:
        q = self.query
        org_ids = await self.scope(q.org_id)
        self.reply(await national_records.list_exports(self.ctx, org_ids, q.cursor, q.limit))


ROUTES = [
    (r"/api/v1/service-records/export", ExportHandler),
    (r"/api/v1/service-records/exports", ExportLogHandler),
]
