"""Exports of a report: an .xlsx workbook of every table, or one table as CSV."""

from __future__ import annotations

import csv
import io
from itertools import zip_longest

from server.domain.stats.report import Breakdown, Report
from server.domain.stats.rollups import FIGURES
from server.spreadsheets import Sheet, workbook

_FIGURE_HEADERS = (
    "活动次数",
    "受益人次",
    "志愿服务时长",
    "大篷车活动次数",
    "行驶里程(km)",
    "大篷车受益人次",
)
TABLES = (
    "summary",
    "months",
    "counties",
    "top_volunteers",
    "top_teams",
    "top_sites",
    "top_projects",
)


def _tables(r: Report) -> dict[str, Sheet]:
    """Every table of a report, with Chinese headers and a totals row where one adds up."""

    def figures(b: Breakdown) -> list:
        return [getattr(b, f) for f in FIGURES]

    def sums(rows: list[Breakdown]) -> list:
        return [round(sum(getattr(b, f) for b in rows), 2 if f == "hours" else 1) for f in FIGURES]

    v, c = r.volunteer, r.caravan
    summary = [
        ("志愿服务队伍", v.teams),
        ("科普基地", v.bases),
        ("科普项目", v.projects),
        ("科普活动", v.activities),
        ("参与志愿者", v.volunteers),
        ("志愿服务时长", v.hours),
        ("受益人次", v.beneficiaries),
        ("大篷车活动次数", c.activities),
        ("大篷车行驶里程(km)", c.km),
        ("大篷车受益人次", c.beneficiaries),
    ]
    return {
        "summary": Sheet("总览", ("指标", "数值"), [list(row) for row in summary]),
        "months": Sheet(
            "按月",
            ("月份", *_FIGURE_HEADERS),
            [[b.key, *figures(b)] for b in r.months],
            totals=["合计", *sums(r.months)],
        ),
        # The row above the counties makes the figures add up; 合计's volunteers are the
        # overview's, each counted once (the column does not add up: see Breakdown).
        "counties": Sheet(
            "按县",
            ("县(区)", "参与志愿者", *_FIGURE_HEADERS),
            [
                *([b.name, b.volunteers, *figures(b)] for b in r.counties),
                [r.above_counties.name, None, *figures(r.above_counties)],
            ],
            totals=["合计", v.volunteers, *sums([*r.counties, r.above_counties])],
        ),
        "top_volunteers": Sheet(
            "十佳志愿者",
            ("名次", "志愿者", "用户ID", "服务时长"),
            [[i, t.name, t.user_id, t.hours] for i, t in enumerate(r.top_volunteers, 1)],
        ),
        "top_teams": Sheet(
            "十佳队伍",
            ("名次", "队伍(按时长)", "服务时长", "名次", "队伍(按活动)", "活动次数"),
            [
                [
                    i,
                    a.name if a else "",
                    a.hours if a else "",
                    i,
                    b.name if b else "",
                    b.activities if b else "",
                ]
                for i, (a, b) in enumerate(
                    zip_longest(r.top_teams_by_hours, r.top_teams_by_activities), 1
                )
            ],
        ),
        "top_sites": Sheet(
            "十佳站点",
            ("名次", "站点", "受益人次"),
            [[i, t.name, t.beneficiaries] for i, t in enumerate(r.top_sites, 1)],
        ),
        "top_projects": Sheet(
            "十佳项目",
            ("名次", "项目", "活动次数", "受益人次"),
            [[i, t.name, t.activities, t.beneficiaries] for i, t in enumerate(r.top_projects, 1)],
        ),
    }


def report_workbook(r: Report) -> bytes:
    """The report as an .xlsx workbook, one sheet per table (CPU work: run in an executor)."""
    return workbook(list(_tables(r).values()))


def report_csv(r: Report, table: str) -> bytes:
    """One table of the report as CSV (UTF-8 with BOM, which Excel needs to read Chinese)."""
    sheet = _tables(r)[table]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(sheet.headers)
    writer.writerows(sheet.rows)
    if sheet.totals is not None:
        writer.writerow(sheet.totals)
    return ("\ufeff" + out.getvalue()).encode()
