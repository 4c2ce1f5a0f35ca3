"""车队: the depots and caravans of the caller's scope, registering either, and changing a
caravan: its description, its maintenance days (a list of dates) and its retirement.

Depots have no edit or retirement in the domain yet, so the page creates and lists them.
"""

from __future__ import annotations

import re

from console.handlers.staff import StaffPage, parse_form
from server import geo
from server.domain import caravans, orgs
from server.domain.errors import DomainError, Forbidden
from server.web import ID

MANAGE = "fleet.manage"
LIMIT = 200  # a county keeps a handful of each; the page shows this many


class FleetPage(StaffPage):
    nav = "fleet"

    async def get(self) -> None:
        await self.show()

    async def show(self, error: DomainError | None = None, form: str = "") -> None:
        scope = await self.scope(MANAGE)
        depots = (await caravans.list_depots(self.ctx, scope, None, LIMIT)).items
        described = await orgs.describe(self.ctx, scope)
        self.set_status(400 if error else 200)
        self.render(
            "fleet.html",
            depots=depots,
            depot_names={d.id: d.name for d in depots},
            lnglat={d.id: geo.point_lnglat(d.location) for d in depots},
            caravans=(await caravans.list_caravans(self.ctx, scope, None, LIMIT)).items,
            orgs=described,
            org_names={o.id: o.name for o in described},
            error=error,
            form=form,
            values={k: self.get_body_argument(k, "") for k in self.request.body_arguments},
            done=self.get_query_argument("done", ""),
        )


class FleetForm(FleetPage):
    async def create(self, form: str, model: type, values: dict, register) -> None:
        await self.require_anywhere(MANAGE)
        try:
            new = parse_form(model, {k: v for k, v in values.items() if v is not None})
            await self.require(MANAGE, new.org_id)
            await register(self.ctx, new, created_by=self.staff_id)
        except Forbidden:
            raise
        except DomainError as exc:
            await self.show(exc, form)
            return
        self.redirect(f"/console/fleet?done={form}")


class CaravanForm(FleetPage):
    """A change to one caravan, by whoever manages the fleet of its organisation; a refusal is
    shown on the page, next to the caravan, with what was typed."""

    async def change(self, caravan_id: str, form: str, apply) -> None:
        caravan = await caravans.get_caravan_doc(self.ctx, caravan_id)
        await self.require(MANAGE, caravan["org_id"])
        try:
            await apply(caravan["_id"])
        except Forbidden:
            raise
        except DomainError as exc:
            await self.show(exc, f"{form}-{caravan_id}")
            return
        self.redirect(f"/console/fleet?done={form}")


class NewDepotPage(FleetForm):
    async def post(self) -> None:
        values = {
            "name": self.get_argument("name", ""),
            "org_id": self.arg("org_id"),
            "location": {"lng": self.arg("lng"), "lat": self.arg("lat")},
            "address": self.arg("address"),
        }
        await self.create("depot", caravans.NewDepot, values, caravans.create_depot)


class NewCaravanPage(FleetForm):
    async def post(self) -> None:
        values = {
            k: self.arg(k)
            for k in ("name", "plate", "vehicle_type", "depot_id", "org_id", "crew_size")
        }
        values["odometer_km"] = self.arg("odometer_km")
        await self.create("caravan", caravans.NewCaravan, values, caravans.create_caravan)


class EditCaravanPage(CaravanForm):
    async def post(self, caravan_id: str) -> None:
        async def apply(oid):
            values = {k: self.arg(k) for k in ("name", "plate", "vehicle_type", "depot_id")}
            values["crew_size"] = self.arg("crew_size")
            change = parse_form(
                caravans.CaravanChange, {k: v for k, v in values.items() if v is not None}
            )
            await caravans.edit_caravan(self.ctx, oid, change, by=self.staff_id)

        await self.change(caravan_id, "edit", apply)


class UnavailablePage(CaravanForm):
    """The maintenance days as one text field: dates separated by commas, spaces or lines."""

    async def post(self, caravan_id: str) -> None:
        async def apply(oid):
            dates = [d for d in re.split(r"[\s,，、]+", self.get_argument("dates", "")) if d]
            days = parse_form(caravans.Unavailable, {"dates": dates})
            await caravans.set_unavailable(self.ctx, oid, days.dates)

        await self.change(caravan_id, "unavailable", apply)


class RetireCaravanPage(CaravanForm):
    async def post(self, caravan_id: str) -> None:
        async def apply(oid):
            await caravans.retire_caravan(self.ctx, oid, by=self.staff_id)

        await self.change(caravan_id, "retire", apply)


_C = rf"/console/fleet/caravans/(?P<caravan_id>{ID})"
ROUTES = [
    (r"/console/fleet", FleetPage),
    (r"/console/fleet/depots", NewDepotPage),
    (r"/console/fleet/caravans", NewCaravanPage),
    (_C, EditCaravanPage),
    (_C + "/unavailable", UnavailablePage),
    (_C + "/retire", RetireCaravanPage),
]
