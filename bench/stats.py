"""Statistics at provincial scale: a generated year (148,000 volunteers, 11,425 activities with
their sign-ups and hours, 1,220 caravan trips) on the embedded database, then the annual report
of the province, of its largest city, and the workbook. Prints one JSON line:
{"bench": "stats", "records", "annual_report_s", "subtree_report_s", "xlsx_s", ...}.
Each time is the median of three runs; `recount_report_s` is the same province recounted from the
sources (a period that is not a calendar year), the path the roll-ups spare the annual report.
Target: the provincial annual report in at most 2 s.
Usage: python bench/stats.py [--volunteers N] [--activities N] [--trips N] [--year Y]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _support import fresh_parts, start_context

from server.domain import orgs, stats
from server.logs import configure_logging
from server.seed import Scale, seed_year


async def _median_seconds(make, runs: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = await make()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3), result


async def run(scale: Scale) -> dict:
    configure_logging("json", "warning")
    async with fresh_parts() as (_, settings):
        ctx = await start_context(settings)
        try:
            return await _measure(ctx, scale)
        finally:
            await ctx.close()


async def _measure(ctx, scale: Scale) -> dict:
    """Seed the year, then time the reports."""
    started = time.perf_counter()
    written = await seed_year(ctx, scale)
    seed_s = time.perf_counter() - started
    root = (await orgs.root_org(ctx))["_id"]
    cities = await ctx.db["orgs"].find({"kind": "city"}, {"_id": 1}).to_list(None)
    sizes = {
        c["_id"]: await ctx.db["orgs"].count_documents({"ancestors": c["_id"]}) for c in cities
    }
    largest = max(sizes, key=sizes.get)
    year = stats.Period.calendar_year(scale.year)
    annual_s, report = await _median_seconds(lambda: stats.report(ctx, root, year))
    subtree_s, _ = await _median_seconds(lambda: stats.report(ctx, largest, year))

    async def workbook():
        made = await stats.report(ctx, root, year)
        return await ctx.run_blocking(stats.report_workbook, made)

    xlsx_s, book = await _median_seconds(workbook)
    almost = stats.Period.between(date(scale.year, 1, 1), date(scale.year, 12, 30))
    recount_s, _ = await _median_seconds(lambda: stats.report(ctx, root, almost), 1)
    return {
        "bench": "stats",
        "records": sum(
            written[k] for k in ("volunteers", "activities", "signups", "hours_records", "trips")
        ),
        "annual_report_s": annual_s,
        "subtree_report_s": subtree_s,
        "xlsx_s": xlsx_s,
        "recount_report_s": recount_s,
        "seed_s": round(seed_s, 1),
        "volunteers": written["volunteers"],
        "activities": written["activities"],
        "hours_records": written["hours_records"],
        "trips": written["trips"],
        "report_hours": report.volunteer.hours,
        "xlsx_bytes": len(book),
        "target_met": annual_s <= 2.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volunteers", type=int, default=148_000)
    parser.add_argument("--activities", type=int, default=11_425)
    parser.add_argument("--trips", type=int, default=1_220)
    parser.add_argument("--year", type=int, default=2026)
    args = parser.parse_args()
    scale = Scale(
        volunteers=args.volunteers, activities=args.activities, trips=args.trips, year=args.year
    )
    print(json.dumps(asyncio.run(run(scale)), ensure_ascii=False))


if __name__ == "__main__":
    main()
