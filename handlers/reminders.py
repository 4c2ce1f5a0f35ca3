"""The reminder outbox as administrators see it: counts, dead reminders, retry."""

from __future__ import annotations

import msgspec

from handlers.api import operation
from handlers.base import BaseHandler
from server.domain import notifications, orgs
from server.domain.errors import Forbidden


class Retried(msgspec.Struct):
    status: str


class RootAdminHandler(BaseHandler):
    async def authorize_root(self) -> None:
        root = await orgs.root_org(self.ctx)
        if root is None:
            raise Forbidden("没有权限")
        await self.authorize(root["_id"], "org_admin")


class OutboxHandler(RootAdminHandler):
    @operation(
        "Reminder counts by state and the dead ones with their errors (root org_admin)",
        response=notifications.OutboxSummary,
        errors=(403,),
    )
    async def get(self) -> None:
        await self.authorize_root()
        self.reply(await notifications.summary(self.ctx))


class RetryHandler(RootAdminHandler):
    @operation("Send a dead reminder again", response=Retried, errors=(403, 404))
    async def post(self, reminder_id: str) -> None:
        await self.authorize_root()
        await notifications.retry(self.ctx, reminder_id)
        self.reply(Retried(status="pending"))


ROUTES = [
    (r"/api/v1/reminders", OutboxHandler),
    (r"/api/v1/reminders/(?P<reminder_id>[0-9a-f]{24})/retry", RetryHandler),
]
