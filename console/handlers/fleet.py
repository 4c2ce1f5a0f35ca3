"""车队: the depots and caravans of the caller's scope, and registering either.

The domain has no edit or retirement of a depot or caravan yet, so the page creates and lists.
"""

from __future__ import annotations

from console.handlers.staff import StaffPage, parse_form
from server import geo
from server.domain import caravans, orgs
from server.domain.errors import DomainError, Forbidden

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


ROUTES = [
    (r"/console/fleet", FleetPage),
    (r"/console/fleet/depots", NewDepotPage),
    (r"/console/fleet/caravans", NewCaravanPage),
]
