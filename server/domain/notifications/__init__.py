"""Reminders through WeChat subscribe messages: exactly the right message, once.

Owns `subscriptions` (how many messages each user accepted per template: one accept, one
message) and `reminders` (the outbox). Domain events write reminders; the dispatcher claims
due ones a batch at a time, each with one atomic update, drops those past the moment they made
sense (`stale`, the quota kept), takes the others' quotas in one transaction, sends them through
the WeChat adapter and records the outcomes. A claim carries a lease: if its
process dies mid-send, the reminder is claimed again once the lease runs out, so none is lost.
The database is what limits dispatch, so its reads and writes go a batch at a time.

Modules:
- `subscriptions`: the templates, the quotas users accepted, and taking and giving them back;
- `outbox`: queueing and cancelling reminders, and the outbox as staff see it (summary, retry);
- `reactions`: the reminders each domain event calls for, and `register` hooking them to the bus;
- `dispatch`: claiming due reminders, sending them and recording the outcomes.
"""

from server.domain.notifications.dispatch import dispatch_due
from server.domain.notifications.outbox import OutboxSummary, retry, schedule, summary
from server.domain.notifications.reactions import (
    register,
    remind_pending_hours,
    tell_expert_of_visit,
)
from server.domain.notifications.subscriptions import (
    Accepted,
    Quota,
    QuotaList,
    TemplateList,
    accept,
    quotas,
    templates,
)

__all__ = [
    "Accepted",
    "OutboxSummary",
    "Quota",
    "QuotaList",
    "TemplateList",
    "accept",
    "dispatch_due",
    "quotas",
    "register",
    "remind_pending_hours",
    "retry",
    "schedule",
    "summary",
    "tell_expert_of_visit",
    "templates",
]
