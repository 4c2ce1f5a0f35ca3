"""A season's visit requests from the workbook a county sends in: the template to fill (with the
county's sites to pick from), and the import, which checks every row before writing any, so a
bad workbook imports nothing and is answered with every bad row and column named.

Reading and writing workbooks is CPU work: it runs in the context's executor.
"""

from __future__ import annotations

import io
import re
import zipfile
from datetime import date, datetime

import msgspec
from bson import ObjectId
from openpyxl import load_workbook

from server import spreadsheets
from server.domain import orgs, sites
from server.domain.caravans.visit_requests import request_doc
from server.domain.errors import InvalidRequest

SHEET = "走访申请"
SITE, EARLIEST, LATEST, DURATION, AUDIENCE, PRIORITY = HEADERS = (
    "学校/站点名称或编号",
    "最早日期",
    "最晚日期",
    "时长（分钟）",
    "受众",
    "优先级",
)
MAX_ROWS = 2000
SHOWN_ERRORS = 30  # in the message; every error is in `errors`
_OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")


class Imported(msgspec.Struct):
    imported: int
    ids: list[str]


async def _sites_of(ctx, org_id) -> list[sites.Site]:
    scope = await orgs.subtree_ids(ctx, org_id)
    found: list[sites.Site] = []
    cursor = None
    while True:
        page = await sites.list_sites(ctx, scope, cursor=cursor, limit=500)
        found += page.items
        if (cursor := page.next_cursor) is None:
            return found


async def template(ctx, org_id: ObjectId) -> bytes:
    """An empty request sheet, and a sheet of the organisation's sites (name and id)."""
    rows = [(s.name, s.id) for s in await _sites_of(ctx, org_id)]
    sheets = [
        spreadsheets.Sheet(SHEET, HEADERS, [], widths={1: 30, 2: 14, 3: 14, 4: 14, 5: 20, 6: 10}),
        spreadsheets.Sheet("站点", ("站点名称", "站点编号"), rows, widths={2: 28}),
    ]
    return await ctx.run_blocking(spreadsheets.workbook, sheets)


def _rows(body: bytes) -> list[tuple[int, tuple]]:
    """The request sheet's rows after the header, by their row number in Excel; empty rows
    skipped."""
    try:
        book = load_workbook(io.BytesIO(body), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        raise InvalidRequest("文件不是有效的 xlsx 工作簿", field="file") from None
    sheet = book[SHEET] if SHEET in book.sheetnames else book.worksheets[0]
    lines = sheet.iter_rows(values_only=True)
    header = tuple(str(v).strip() if v is not None else "" for v in next(lines, ()))
    if header[: len(HEADERS)] != HEADERS:
        raise InvalidRequest(f"第1行应为表头：{'、'.join(HEADERS)}", field="file")
    rows = []
    for number, values in enumerate(lines, start=2):
        values = (tuple(values) + (None,) * len(HEADERS))[: len(HEADERS)]
        if any(v is not None and str(v).strip() for v in values):
            rows.append((number, values))
    book.close()
    if len(rows) > MAX_ROWS:
        raise InvalidRequest(f"一次最多导入 {MAX_ROWS} 行", field="file")
    return rows


def _date(value) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip().replace("/", "-").replace(".", "-")
    year, month, day = (int(part) for part in text.split("-"))
    return date(year, month, day)


def _whole(value) -> int:
    number = float(str(value).strip()) if not isinstance(value, int | float) else value
    if number != int(number):
        raise ValueError
    return int(number)


def _check(cell: dict, by_id: dict, by_name: dict, today: date) -> tuple[list, dict]:
    """One row's problems as (column, problem), and its values."""
    problems: list[tuple[str, str]] = []
    found: dict = {}
    key = str(cell[SITE]).strip() if cell[SITE] is not None else ""
    if not key:
        problems.append((SITE, "未填写"))
    elif _OBJECT_ID.match(key) and key in by_id:
        found[SITE] = by_id[key]
    elif len(by_name.get(key, ())) == 1:
        found[SITE] = by_name[key][0]
    elif key in by_name:
        problems.append((SITE, f"有多个名为「{key}」的站点，请填写站点编号"))
    else:
        problems.append((SITE, f"找不到站点「{key}」"))
    for column in (EARLIEST, LATEST):
        if cell[column] is None:
            problems.append((column, "未填写"))
            continue
        try:
            found[column] = _date(cell[column])
        except ValueError:
            problems.append((column, "不是有效的日期（如 2025-03-01）"))
    if EARLIEST in found and LATEST in found and found[LATEST] < found[EARLIEST]:
        problems.append((LATEST, "早于最早日期"))
    elif LATEST in found and found[LATEST] < today:
        problems.append((LATEST, "已过"))
    for column, low, high, default in ((DURATION, 30, 480, None), (PRIORITY, 1, 10, 5)):
        if cell[column] is None:
            if default is None:
                problems.append((column, "未填写"))
            found[column] = default
            continue
        try:
            found[column] = _whole(cell[column])
        except ValueError:
            problems.append((column, "应为整数"))
            continue
        if not low <= found[column] <= high:
            problems.append((column, f"应在 {low} 到 {high} 之间"))
    audience = str(cell[AUDIENCE]).strip() if cell[AUDIENCE] is not None else ""
    if len(audience) > 100:
        problems.append((AUDIENCE, "不能超过 100 个字"))
    found[AUDIENCE] = audience or None
    return problems, found


async def import_requests(
    ctx, org_id: ObjectId, body: bytes, *, created_by: ObjectId | None
) -> Imported:
    """Every row a request of a site in the organisation's subtree, or nothing imported."""
    rows = await ctx.run_blocking(_rows, body)
    if not rows:
        raise InvalidRequest("工作簿中没有申请", field="file")
    known = await _sites_of(ctx, org_id)
    by_id = {s.id: s for s in known}
    by_name: dict[str, list[sites.Site]] = {}
    for s in known:
        by_name.setdefault(s.name, []).append(s)
    today = ctx.clock.local_now().date()
    errors: list[str] = []
    docs: list[dict] = []
    for number, values in rows:
        problems, v = _check(dict(zip(HEADERS, values, strict=True)), by_id, by_name, today)
        errors += [f"第{number}行「{column}」{problem}" for column, problem in problems]
        if errors:
            continue  # nothing will be written: only the checks go on
        site = v[SITE]
        place = {"_id": ObjectId(site.id), "org_id": ObjectId(site.org_id)}
        place["audience"] = site.audience
        docs.append(
            request_doc(
                ctx, place, v[EARLIEST], v[LATEST], v[DURATION], v[AUDIENCE], v[PRIORITY],
                created_by,
            )
        )  # fmt: skip
    if errors:
        shown = "；".join(errors[:SHOWN_ERRORS]) + ("……" if len(errors) > SHOWN_ERRORS else "")
        message = f"导入失败，未导入任何申请（{len(errors)} 处错误）：{shown}"
        raise InvalidRequest(message, field="file", errors=errors)
    await ctx.db["visit_requests"].insert_many(docs)
    return Imported(imported=len(docs), ids=[str(d["_id"]) for d in docs])
