"""The reminder outbox as administrators see it: counts, dead reminders, retry."""

from __future__ import annotations

import msgspec

from server.domain import access, notifications
from server.web import ID, BaseHandler, operation


class Retried(msgspec.Struct):
    status: str


class RootAdminHandler(BaseHandler):
    async def authorize_root(self) -> None:
        await access.require_root(self.ctx, self.user_id, self.operation.permission)


class OutboxHandler(RootAdminHandler):
    @operation(
        "Reminder counts by state and the dead ones with their errors (the whole province's)",
        response=notifications.OutboxSummary,
        errors=(403,),
        permission="outbox.manage",
    )
    async def get(self) -> None:
        await self.authorize_root()
        self.reply(await notifications.summary(self.ctx))


class RetryHandler(RootAdminHandler):
    @operation(
        "Send a dead reminder again",
        response=Retried,
        errors=(403, 404),
        permission="outbox.manage",
    )
    async def post(self, reminder_id: str) -> None:
        await self.authorize_root()
        await notifications.retry(self.ctx, reminder_id)
        self.reply(Retried(status="pending"))


ROUTES = [
    (r"/api/v1/reminders", OutboxHandler),
    (rf"/api/v1/reminders/(?P<reminder_id>{ID})/retry", RetryHandler),
]
