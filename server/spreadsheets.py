"""Excel workbooks (openpyxl) for exports: one sheet per table, Chinese headers, widths set.

Building a workbook is CPU work: callers run `workbook` in an executor, never on the event loop.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from server.clock import SHANGHAI


@dataclass
class Sheet:
    title: str
    headers: Sequence[str]
    rows: list[Sequence[Any]]
    totals: Sequence[Any] | None = None
    widths: dict[int, float] = field(default_factory=dict)


def _cell(value: Any) -> Any:
    # Excel has no time zones: show local (Asia/Shanghai) time, which is what staff read.
    if isinstance(value, datetime):
        return value.astimezone(SHANGHAI).replace(tzinfo=None)
    if isinstance(value, str):
        # A control character (pasted into a name) cannot be stored in a sheet at all: drop it
        # rather than fail the whole export.
        return ILLEGAL_CHARACTERS_RE.sub("", value)
    return value


def _width(value: Any) -> int:
    text = str(value) if value is not None else ""
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)  # CJK characters are double width


def workbook(sheets: Sequence[Sheet]) -> bytes:
    book = Workbook()
    book.remove(book.active)
    bold = Font(bold=True)
    for sheet in sheets:
        ws = book.create_sheet(sheet.title[:31])
        ws.append([_cell(h) for h in sheet.headers])
        for cell in ws[1]:
            cell.font = bold
        for row in sheet.rows:
            ws.append([_cell(v) for v in row])
        if sheet.totals is not None:
            ws.append([_cell(v) for v in sheet.totals])
            for cell in ws[ws.max_row]:
                cell.font = bold
        ws.freeze_panes = "A2"
        for index, header in enumerate(sheet.headers, start=1):
            column = [header, *(r[index - 1] for r in sheet.rows if len(r) >= index)]
            width = sheet.widths.get(index) or min(60, max(_width(v) for v in column) + 2)
            ws.column_dimensions[get_column_letter(index)].width = width
            if any(isinstance(r[index - 1], datetime) for r in sheet.rows[:1]):
                for (cell,) in ws.iter_rows(min_row=2, min_col=index, max_col=index):
                    cell.number_format = "yyyy-mm-dd hh:mm"
                ws.column_dimensions[get_column_letter(index)].width = max(width, 18)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
