"""Subscribe-message templates and the user's accepted quota (one accept, one message)."""

from __future__ import annotations

from server.domain import notifications
from server.web import BaseHandler, operation


class TemplatesHandler(BaseHandler):
    @operation(
        "Templates the mini-program asks the user to accept",
        response=notifications.TemplateList,
        auth=False,
    )
    async def get(self) -> None:
        self.reply(notifications.templates(self.ctx))


class MySubscriptionsHandler(BaseHandler):
    @operation(
        "How many messages of each template I still accept", response=notifications.QuotaList
    )
    async def get(self) -> None:
        self.reply(await notifications.quotas(self.ctx, self.user_id))

    @operation(
        "Record what I accepted in wx.requestSubscribeMessage",
        body=notifications.Accepted,
        response=notifications.QuotaList,
        idempotent=True,
    )
    async def post(self) -> None:
        self.reply(await notifications.accept(self.ctx, self.user_id, self.body.accepted))


ROUTES = [
    (r"/mp/v1/subscriptions/templates", TemplatesHandler),
    (r"/mp/v1/me/subscriptions", MySubscriptionsHandler),
]
