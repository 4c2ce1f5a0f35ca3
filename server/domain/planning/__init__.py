"""Caravan plans: which caravan visits which site on which working day.

Owns the `plans` collection. A plan gathers the open visit requests and the caravans of an
organisation's subtree over a date range, turns them into a :class:`server.vrp.PlanProblem`
and solves it in the context's process pool, never on the event loop. The solve runs as a
background asyncio task started by `create_plan` (and by `replan`), kept in the context's
registry of this process's solves (`ctx.solves`, a :class:`Solves`) keyed by plan id; the task
reads the solver's progress from a manager queue and writes it to the plan document, then
stores the routes with each stop's arrival and departure.

States: queued → running → done | failed. The dispatcher reviews a done plan, pins a visit to a
caravan and day or removes (excludes) one, re-plans (pins and exclusions hold), and publishes:
every planned visit becomes a published activity at its site that volunteers join as crew.

A plan made for a campaign (server/domain/campaigns.py) takes the campaign's caravans, from
several counties, and lies within its period.

Solving survives the death of its process. A queued or running plan holds a lease
(`lease_until`, `lease_holder`, kept by :class:`server.db.leases.Lease`): a solve claims the
plan atomically (only one process wins) and renews the lease while it runs. When the lease
runs out, the process solving it died (or its pool worker did): a service that starts
(`recover`, when its context is wired) or reads the plan (`get_plan`) claims it and solves it
again, up to MAX_ATTEMPTS attempts, after which the plan fails with a reason.

Modules
-------
* :mod:`~server.domain.planning.models`: the request and response types (:class:`NewPlan`,
  :class:`NewPin`, :class:`Exclusion`, :class:`Queued`, :class:`PlanOut` and its parts
  (:class:`PlanTotals`: a run's km, visits and unassigned, for the run before too),
  :class:`PlanSummary`, :class:`PlanPage`, :class:`PublishOut`) and ``MAX_TIME_LIMIT_S``.
* :mod:`~server.domain.planning.plans`: creating, reading and listing plans; pins, exclusions
  and re-planning.
* :mod:`~server.domain.planning.solving`: the solve lifecycle: :class:`Solves` (the tasks of
  this process), the plan's lease and its claim, the process-pool solve with its progress, and
  `recover` for plans whose solver died.
* :mod:`~server.domain.planning.problem`: the plan's working days, the solver's problem built
  from its caravans, depots, requests and sites (with pins and exclusions), and the solver's
  result as the plan's routes.
* :mod:`~server.domain.planning.publishing`: `publish`, planned visits as published activities;
  `withdrawn_visits`, those whose request was cancelled or declined since.

The public API is re-exported here: ``from server.domain import planning;
planning.create_plan(...)``.
"""

from server.domain.planning.models import (
    MAX_TIME_LIMIT_S,
    Exclusion,
    NewPin,
    NewPlan,
    PinOut,
    PlanOut,
    PlanPage,
    PlanSummary,
    PlanTotals,
    PublishedVisit,
    PublishOut,
    Queued,
    RouteOut,
    StopOut,
    UnassignedOut,
)
from server.domain.planning.plans import (
    MAX_DAYS,
    create_plan,
    exclude,
    get_plan,
    get_plan_doc,
    list_plans,
    pin,
    plan_org,
    replan,
    unpin,
)
from server.domain.planning.problem import REASON_ALREADY_SCHEDULED, working_days
from server.domain.planning.publishing import publish, withdrawn_visits
from server.domain.planning.solving import MAX_ATTEMPTS, Solves, recover, start_solving

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_DAYS",
    "MAX_TIME_LIMIT_S",
    "REASON_ALREADY_SCHEDULED",
    "Exclusion",
    "NewPin",
    "NewPlan",
    "PinOut",
    "PlanOut",
    "PlanPage",
    "PlanSummary",
    "PlanTotals",
    "PublishOut",
    "PublishedVisit",
    "Queued",
    "RouteOut",
    "Solves",
    "StopOut",
    "UnassignedOut",
    "create_plan",
    "exclude",
    "get_plan",
    "get_plan_doc",
    "list_plans",
    "pin",
    "plan_org",
    "publish",
    "recover",
    "replan",
    "start_solving",
    "unpin",
    "withdrawn_visits",
    "working_days",
]
