"""The signed-in volunteer's own profile."""

from __future__ import annotations

from server.domain import identity
from server.web import BaseHandler, operation


class MeHandler(BaseHandler):
    @operation("My profile", response=identity.Profile)
    async def get(self) -> None:
        self.reply(await identity.profile(self.ctx, self.user_id))

    @operation(
        "Change my name, expertise, region or accepted privacy notice",
        body=identity.ProfileChange,
        response=identity.Profile,
    )
    async def patch(self) -> None:
        self.reply(await identity.update_profile(self.ctx, self.user_id, self.body))


ROUTES = [(r"/mp/v1/me", MeHandler)]
