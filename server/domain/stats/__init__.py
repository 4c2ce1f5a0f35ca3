"""Statistics: the association's year in numbers, for any organisation subtree and period.

Owns the roll-ups `stats_orgs`, `stats_volunteers`, `stats_sites` and `stats_projects`: one
document per (organisation, volunteer, site or project, calendar year). Every fact counts at its
own organisation and at each one above it, so a subtree's figures are one document however large
the subtree is; that is what keeps the provincial report fast on a database that scans slowly.
An organisation's document also keeps the year's figures of each caravan whose trips count
there, which is what the caravan KPIs read.
The domain events keep the roll-ups current; the nightly job recounts the year from the sources
(the hours ledger, the activities, the trip logs) and repairs any document that differs, with a
log line for each collection that did.

A report for a calendar year reads the roll-ups; any other period is recounted from the sources,
which is exact and slower.

What counts, on Asia/Shanghai dates:
- activities: published i科普 activities starting in the period and not cancelled (caravan visits
  count as caravan work instead); beneficiaries: the people they reached, as organisers reported;
- hours: confirmed hours served in the period, corrections included; volunteers: those with more
  than zero such hours;
- teams, bases and projects: those created before the period ends;
- caravan activities and beneficiaries: visits the sites confirmed; km: every logged trip.

Modules:
- `periods`: a calendar year or a span of days, and the query parameters that name one;
- `rollups`: the counting rules (`Tally`), the recount from the sources and the documents;
- `subscribers`: the domain-event subscribers that keep the roll-ups current, and `register`;
- `nightly`: `reconcile`, the nightly recount that checks and repairs the roll-ups;
- `report`: the report of a subtree over a period, from the roll-ups or recounted;
- `exports`: the report as an .xlsx workbook or one table as CSV;
- `caravan_kpis`: the caravan KPIs (`GET /api/v1/caravans/kpis`), read from the organisations'
  roll-ups.

Statistics import the domains they count (caravans among them), never the other way round at
import time.
"""

from server.domain.stats.exports import TABLES, report_csv, report_workbook
from server.domain.stats.nightly import reconcile
from server.domain.stats.periods import Period, parse_period
from server.domain.stats.report import Report, report
from server.domain.stats.rollups import ORGS, PROJECTS, SITES, VOLUNTEERS
from server.domain.stats.subscribers import register

__all__ = [
    "ORGS",
    "PROJECTS",
    "SITES",
    "TABLES",
    "VOLUNTEERS",
    "Period",
    "Report",
    "parse_period",
    "reconcile",
    "register",
    "report",
    "report_csv",
    "report_workbook",
]
