"""The signed-in volunteer's own profile."""

from __future__ import annotations

from server.domain import identity
from server.web import BaseHandler, operation


class MeHandler(BaseHandler):
    @operation("My profile", response=identity.Profile)
    async def get(self) -> None:
        self.reply(await identity.profile(self.ctx, self.user_id))

    @operation(
        "Change my name, expertise, region or accepted privacy notice; or the identity items a "
        "service record of the national systems needs: id_type with id_number (an 18-digit "
        "resident ID's check digit is verified, and gender and birth date follow from it), "
        "gender and birth_date otherwise, volunteer_number. The number is answered masked only; "
        "one already registered to another account is 409 `id_number_taken`",
        body=identity.ProfileChange,
        response=identity.Profile,
        errors=(400, 409),
    )
    async def patch(self) -> None:
        self.reply(await identity.update_profile(self.ctx, self.user_id, self.body))


ROUTES = [(r"/mp/v1/me", MeHandler)]
