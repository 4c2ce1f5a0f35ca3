"""The domain: one module (or package) per concept, plain async Python over the database, no HTTP.

Each collection has one owner; no module reads or writes another's collection except through the
owner's functions (a few modules say in their docstring that they only read one, or write only
some fields of it).

| module | owns | what |
|---|---|---|
| `access` | `role_grants` | the permission table, roles (in a subtree, or one site), checks |
| `orgs` | `orgs`, `orgs_version` | the organisation tree: province → county, teams, bases |
| `identity` | `users`, `sessions`, `refresh_tokens` | WeChat login, sessions, profiles, phones |
| `console_sessions` | `console_logins` | console sign-in by scanning (sessions: identity's) |
| `ratelimit` | `rate_limits` | sliding-window limits shared by processes |
| `sites` | `sites` | schools, villages, communities, bases |
| `projects` | `projects` | i科普 projects, the programmes activities belong to |
| `activities` | `activities` | activities' lifecycle, publishing, reach, the staff's listing |
| `seats` | (seat fields of `activities`) | the seat counters and capacity of an activity |
| `discovery` | (reads `activities`) | the mini-program's listing: near me, dates, tags |
| `catalogue` | `catalogue_version` | discovery's read model: upcoming activities in memory |
| `signups` | `signups` | sign-up, cancel, waitlist and promotion, approvals, capacity changes |
| `signup_repair` | (mends `signups`, seats) | counters back in step with records after a crash |
| `rosters` | (reads `signups`) | rosters and their workbook, a volunteer's own sign-ups |
| `attendance` | `attendance` | check-in codes, check-in and check-out on site |
| `hours` | `hours_ledger` | the append-only ledger, confirmation, corrections |
| `adjustments` | `hours_adjustments` | corrections' bound, requests beyond it, second approval |
| `disputes` | `hours_disputes` | volunteers' disputes, their resolution, each record's history |
| `certificates` | `certificates` | the 志愿服务记录证明 PDF and its public check |
| `notifications` | `subscriptions`, `reminders` | subscribe-message quotas, the outbox, dispatch |
| `caravans` | `depots`, `caravans`, `visit_requests`, `trips` | 科普大篷车 fleet, requests, trips |
| `campaigns` | `campaigns` | caravans of several counties pooled for a period |
| `planning` | `plans` | plans solved in the process pool, pins, publishing |
| `stats` | `stats_orgs`, `_volunteers`, `_sites`, `_projects` | roll-ups, the report |
| `people` | (reads `users`) | the console's user search, who holds roles in an organisation |
| `dashboard` | (reads `activities`, `visit_requests`) | the console's 首页 |
| `pending_hours` | (none: through `hours`) | the console's confirmation queue, by activity |
| `geocoding` | `geocode_cache` | addresses to coordinates, cached |
| `idempotency` | `idempotency` | stored answers for retried writes |

Shared pieces own nothing: `events` (every kind of domain event, and the bus on the context),
`errors` (domain errors, mapped to HTTP in one place: server/web/base.py), `ids`, `paging`
(cursors), and `wiring` (what a process does once its context is built). The scheduler's lease
document in `leases` and the daily jobs' last runs in `job_runs` belong to jobs/scheduler.py;
`wechat_tokens` to server/wechat.
"""
