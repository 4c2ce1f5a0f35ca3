"""出车记录: logging a caravan's duty day (odometer start and end, the visits made with the
people reached) and the days logged, each visit confirmed by its site or still waiting."""

from __future__ import annotations

from console.handlers.staff import StaffPage, parse_form
from server.domain import caravans, sites
from server.domain.errors import DomainError, Forbidden
from server.domain.ids import parse_id

LOG = "trip.log"
PAGE_SIZE = 20
VISIT_ROWS = 4  # visits one form logs; a caravan rarely makes more in a day
CHOICES = 200


class TripsPage(StaffPage):
    nav = "trips"

    async def get(self) -> None:
        await self.show()

    async def show(self, error: DomainError | None = None) -> None:
        scope = await self.scope(LOG)
        trips = await caravans.list_trips(
            self.ctx, scope, cursor=self.arg("cursor"), limit=PAGE_SIZE
        )
        fleet = (await caravans.list_caravans(self.ctx, scope, None, CHOICES)).items
        scheduled = await caravans.list_requests(self.ctx, scope, status="scheduled", limit=CHOICES)
        site_ids = {parse_id(r.site_id) for r in scheduled.items}
        site_ids |= {parse_id(v.site_id) for t in trips.items for v in t.visits}
        site_names = {
            str(k): v["name"] for k, v in (await sites.briefs(self.ctx, list(site_ids))).items()
        }
        self.set_status(400 if error else 200)
        self.render(
            "trips.html",
            trips=trips,
            caravans=fleet,
            caravan_names={c.id: c.name for c in fleet},
            requests=scheduled.items,
            site_names=site_names,
            rows=VISIT_ROWS,
            error=error,
            values={k: self.get_body_argument(k, "") for k in self.request.body_arguments},
            done=self.get_query_argument("done", ""),
            today=self.ctx.clock.local_now().date().isoformat(),
        )

    async def post(self) -> None:
        await self.require_anywhere(LOG)
        visits = [
            {"request_id": self.arg(f"request_{i}"), "beneficiaries": self.arg(f"people_{i}") or 0}
            for i in range(VISIT_ROWS)
            if self.arg(f"request_{i}")
        ]
        values = {
            "caravan_id": self.arg("caravan_id"),
            "date": self.arg("date"),
            "odometer_start_km": self.arg("odometer_start_km"),
            "odometer_end_km": self.arg("odometer_end_km"),
            "visits": visits,
        }
        try:
            new = parse_form(caravans.NewTrip, {k: v for k, v in values.items() if v is not None})
            caravan = await caravans.get_caravan_doc(self.ctx, new.caravan_id)
            await self.require(LOG, caravan["org_id"])
            await caravans.log_trip(self.ctx, new, logged_by=self.staff_id)
        except Forbidden:
            raise
        except DomainError as exc:
            await self.show(exc)
            return
        self.redirect("/console/trips?done=logged")


ROUTES = [
    (r"/console/trips", TripsPage),
]
