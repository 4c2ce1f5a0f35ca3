"""Workbooks for exports (server/spreadsheets.py)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from openpyxl import load_workbook

from server.spreadsheets import Sheet, workbook


def test_a_control_character_in_a_name_is_dropped_not_a_failed_export():
    # The API fuzzer registered a site named "\x0f", and the annual report's xlsx answered 500.
    served = datetime(2026, 3, 1, 1, 30, tzinfo=UTC)
    rows = [["\x0f城关\x1b小学", served]]
    sheet = Sheet("十佳站点", ["站点", "时间"], rows, totals=["合计\x07", None])
    data = workbook([sheet])
    rows = list(load_workbook(io.BytesIO(data)).active.iter_rows(values_only=True))
    assert rows == [("站点", "时间"), ("城关小学", datetime(2026, 3, 1, 9, 30)), ("合计", None)]
