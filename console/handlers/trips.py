"""出车记录: logging a caravan's duty day (odometer start and end, the visits made with the
people reached) and the days logged, each visit confirmed by its site or still waiting.

A site's admin (whoever holds `visit.confirm` there) sees on the same page the visits logged at
their sites still waiting for them, and confirms each: `caravans.confirm_visit`, as
`POST /api/v1/trips/{trip_id}/visits/{request_id}/confirm` and the mini-program do.
"""

from __future__ import annotations

from console.handlers.staff import StaffPage, parse_form
from server.domain import access, caravans, sites
from server.domain.errors import DomainError, Forbidden
from server.domain.ids import parse_id
from server.web import ID

LOG = "trip.log"
CONFIRM = "visit.confirm"
PAGE_SIZE = 20
VISIT_ROWS = 4  # visits one form logs; a caravan rarely makes more in a day
CHOICES = 200
WAITING_SHOWN = 100


class TripsPage(StaffPage):
    nav = "trips"

    async def get(self) -> None:
        await self.show()

    async def show(self, error: DomainError | None = None, confirm_error: str = "") -> None:
        logging, confirming = await self.holds(LOG), await self.holds(CONFIRM)
        if not (logging or confirming):
            raise Forbidden("没有执行此操作的权限")
        trips, fleet, scheduled, waiting = caravans.TripPage([], None), [], [], []
        if logging:
            scope = await access.scope(self.ctx, self.staff_id, LOG)
            trips = await caravans.list_trips(
                self.ctx, scope, cursor=self.arg("cursor"), limit=PAGE_SIZE
            )
            fleet = (await caravans.list_caravans(self.ctx, scope, None, CHOICES)).items
            scheduled = (
                await caravans.list_requests(self.ctx, scope, status="scheduled", limit=CHOICES)
            ).items
        if confirming:
            waiting = await caravans.awaiting_confirmation(
                self.ctx,
                await access.scope(self.ctx, self.staff_id, CONFIRM),
                await access.site_scope(self.ctx, self.staff_id, CONFIRM),
                limit=WAITING_SHOWN,
            )
        site_ids = {parse_id(r.site_id) for r in scheduled}
        site_ids |= {parse_id(v.site_id) for t in trips.items for v in t.visits}
        site_ids |= {parse_id(w.site_id) for w in waiting}
        site_names = {
            str(k): v["name"] for k, v in (await sites.briefs(self.ctx, list(site_ids))).items()
        }
        waiting_caravans = await caravans.caravans_by_id(
            self.ctx, list({parse_id(w.caravan_id) for w in waiting})
        )
        self.set_status(400 if error or confirm_error else 200)
        self.render(
            "trips.html",
            logging=logging,
            trips=trips,
            caravans=fleet,
            caravan_names={c.id: c.name for c in fleet}
            | {str(k): v["name"] for k, v in waiting_caravans.items()},
            requests=scheduled,
            site_names=site_names,
            rows=VISIT_ROWS,
            error=error,
            waiting=waiting,
            confirm_error=confirm_error,
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


class ConfirmVisit(TripsPage):
    """The site's admin confirms one visit; the domain checks the site is theirs."""

    async def post(self, trip_id: str, request_id: str) -> None:
        await self.require_anywhere(CONFIRM)
        try:
            await caravans.confirm_visit(self.ctx, trip_id, request_id, by=self.staff_id)
        except Forbidden:
            raise
        except DomainError as exc:
            await self.show(confirm_error=exc.message)
            return
        self.redirect("/console/trips?done=confirmed#waiting")


ROUTES = [
    (r"/console/trips", TripsPage),
    (rf"/console/trips/(?P<trip_id>{ID})/visits/(?P<request_id>{ID})/confirm", ConfirmVisit),
]
