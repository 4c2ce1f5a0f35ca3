"""The signed-in expert's own record: the dates they are free for county visits."""

from __future__ import annotations

from server.domain import experts
from server.web import BaseHandler, operation


class MyExpertHandler(BaseHandler):
    @operation(
        "My expert record (404 when I am not a registered expert)",
        response=experts.ExpertOut,
        errors=(404,),
    )
    async def get(self) -> None:
        self.reply(await experts.expert_of_user(self.ctx, self.user_id))


class MyFreeDatesHandler(BaseHandler):
    @operation(
        "Set the dates I am free for county visits (the whole list)",
        body=experts.FreeDates,
        response=experts.ExpertOut,
        errors=(404,),
    )
    async def put(self) -> None:
        self.reply(await experts.set_my_free_dates(self.ctx, self.user_id, self.body.dates))


ROUTES = [
    (r"/mp/v1/me/expert", MyExpertHandler),
    (r"/mp/v1/me/expert/free-dates", MyFreeDatesHandler),
]
