"""科普大篷车: depots, caravans, visit requests, campaigns pooling caravans across counties,
plans (create, review, pin, exclude, re-plan, publish), trip logs with the site's confirmation,
and the caravan KPIs. Every collection lists with a cursor, limited to what the caller may see."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import msgspec
from bson import ObjectId

from handlers.api import operation
from handlers.base import BaseHandler
from handlers.orgs import Created
from server.domain import campaigns, caravans, orgs, planning, sites
from server.domain.ids import parse_id
from server.domain.paging import DEFAULT_LIMIT, MAX_LIMIT

PLANNERS = ("dispatcher",)  # org_admin always passes
REQUEST_READERS = (*PLANNERS, "site_admin")


class KpiQuery(msgspec.Struct, forbid_unknown_fields=True):
    year: Annotated[int, msgspec.Meta(ge=2000, le=2100)]
    org_id: str


class ListQuery(msgspec.Struct, forbid_unknown_fields=True):
    """`org_id`: only that organisation's subtree (the caller must hold a role there or
    above); without it, every organisation the caller may see."""

    org_id: str | None = None
    cursor: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT


class VisitRequestQuery(ListQuery, forbid_unknown_fields=True):
    """`from`/`to`: the requests that may be visited within these dates."""

    status: caravans.RequestStatus | None = None
    site_id: str | None = None
    from_: date | None = msgspec.field(default=None, name="from")
    to: date | None = None


class TripQuery(ListQuery, forbid_unknown_fields=True):
    """`from`/`to`: the trips of these dates."""

    caravan_id: str | None = None
    from_: date | None = msgspec.field(default=None, name="from")
    to: date | None = None


class ListHandler(BaseHandler):
    async def scope(self, *roles: str) -> list[ObjectId]:
        """The organisations a list shows: the subtree of the `org_id` asked for, or every
        subtree in which the caller holds one of `roles` (staff of an org or above it)."""
        if self.query.org_id is None:
            return await orgs.scope_ids(self.ctx, self.user_id, set(roles))
        await self.authorize(self.query.org_id, *roles)
        return await orgs.subtree_ids(self.ctx, parse_id(self.query.org_id, "org_id"))


class DepotsHandler(ListHandler):
    @operation(
        "Register a depot (a county depot or a shared centre)",
        body=caravans.NewDepot,
        response=Created,
        status=201,
        errors=(403, 404),
        idempotent=True,
    )
    async def post(self) -> None:
        await self.authorize(self.body.org_id, *PLANNERS)
        depot_id = await caravans.create_depot(self.ctx, self.body, created_by=self.user_id)
        self.reply(Created(id=str(depot_id)))

    @operation("Depots", query=ListQuery, response=caravans.DepotPage, errors=(403,))
    async def get(self) -> None:
        q = self.query
        self.reply(
            await caravans.list_depots(self.ctx, await self.scope(*PLANNERS), q.cursor, q.limit)
        )


class CaravansHandler(ListHandler):
    @operation(
        "Register a caravan (vehicle type Ⅰ/Ⅱ/Ⅳ, plate, home depot, crew size)",
        body=caravans.NewCaravan,
        response=Created,
        status=201,
        errors=(403, 404, 409),
        idempotent=True,
    )
    async def post(self) -> None:
        await self.authorize(self.body.org_id, *PLANNERS)
        caravan_id = await caravans.create_caravan(self.ctx, self.body, created_by=self.user_id)
        self.reply(Created(id=str(caravan_id)))

    @operation("Caravans", query=ListQuery, response=caravans.CaravanPage, errors=(403,))
    async def get(self) -> None:
        q = self.query
        self.reply(
            await caravans.list_caravans(self.ctx, await self.scope(*PLANNERS), q.cursor, q.limit)
        )


class VisitRequestsHandler(ListHandler):
    @operation(
        "A site asks for a caravan visit within a date range (its admin, or a dispatcher)",
        body=caravans.NewVisitRequest,
        response=Created,
        status=201,
        errors=(403, 404),
        idempotent=True,
    )
    async def post(self) -> None:
        site = await sites.get_site_doc(self.ctx, self.body.site_id)
        if not await sites.is_site_admin(self.ctx, self.user_id, site):
            await self.authorize(site["org_id"], *PLANNERS)
        request_id = await caravans.create_request(self.ctx, self.body, created_by=self.user_id)
        self.reply(Created(id=str(request_id)))

    @operation(
        "Visit requests, by status, site and the dates they may be visited",
        query=VisitRequestQuery,
        response=caravans.VisitRequestPage,
        errors=(403,),
    )
    async def get(self) -> None:
        q = self.query
        self.reply(
            await caravans.list_requests(
                self.ctx,
                await self.scope(*REQUEST_READERS),
                status=q.status,
                site_id=q.site_id,
                start=q.from_,
                end=q.to,
                cursor=q.cursor,
                limit=q.limit,
            )
        )


class CampaignsHandler(ListHandler):
    @operation(
        "Pool caravans of several counties for a period (沿黄科普行-style tours)",
        body=campaigns.NewCampaign,
        response=Created,
        status=201,
        errors=(403, 404, 409),
        idempotent=True,
    )
    async def post(self) -> None:
        await self.authorize(self.body.org_id, *PLANNERS)
        campaign_id = await campaigns.create_campaign(self.ctx, self.body, created_by=self.user_id)
        self.reply(Created(id=str(campaign_id)))

    @operation(
        "Campaigns, newest first", query=ListQuery, response=campaigns.CampaignPage, errors=(403,)
    )
    async def get(self) -> None:
        q = self.query
        self.reply(
            await campaigns.list_campaigns(self.ctx, await self.scope(*PLANNERS), q.cursor, q.limit)
        )


class CampaignHandler(BaseHandler):
    @operation("A campaign", response=campaigns.CampaignOut, errors=(403, 404))
    async def get(self, campaign_id: str) -> None:
        campaign = await campaigns.get_campaign(self.ctx, campaign_id)
        await self.authorize(campaign.org_id, *PLANNERS)
        self.reply(campaign)


class PlansHandler(ListHandler):
    @operation(
        "Plan the caravans' visits over a date range; solved in the background",
        body=planning.NewPlan,
        response=planning.Queued,
        status=202,
        errors=(403, 404),
        idempotent=True,
    )
    async def post(self) -> None:
        await self.authorize(self.body.org_id, *PLANNERS)
        plan_id = await planning.create_plan(self.ctx, self.body, created_by=self.user_id)
        self.reply(planning.Queued(id=str(plan_id), status="queued"))

    @operation(
        "Plans, newest first, without their routes",
        query=ListQuery,
        response=planning.PlanPage,
        errors=(403,),
    )
    async def get(self) -> None:
        q = self.query
        self.reply(
            await planning.list_plans(self.ctx, await self.scope(*PLANNERS), q.cursor, q.limit)
        )


class PlanStaffHandler(BaseHandler):
    async def authorize_plan(self, plan_id: str) -> None:
        await self.authorize(await planning.plan_org(self.ctx, plan_id), *PLANNERS)


class PlanHandler(PlanStaffHandler):
    @operation(
        "A plan: status, progress while solving, routes with arrival and departure per stop",
        response=planning.PlanOut,
        errors=(403, 404),
    )
    async def get(self, plan_id: str) -> None:
        await self.authorize_plan(plan_id)
        self.reply(await planning.get_plan(self.ctx, plan_id))


class PinsHandler(PlanStaffHandler):
    @operation(
        "Pin a visit to a caravan and day (holds at the next re-plan)",
        body=planning.NewPin,
        response=planning.PlanOut,
        errors=(403, 404, 409),
    )
    async def post(self, plan_id: str) -> None:
        await self.authorize_plan(plan_id)
        self.reply(await planning.pin(self.ctx, plan_id, self.body))


class PinHandler(PlanStaffHandler):
    @operation("Remove a pin", response=planning.PlanOut, errors=(403, 404, 409))
    async def delete(self, plan_id: str, request_id: str) -> None:
        await self.authorize_plan(plan_id)
        self.reply(await planning.unpin(self.ctx, plan_id, request_id))


class ExclusionsHandler(PlanStaffHandler):
    @operation(
        "Remove a visit from the plan (holds at the next re-plan)",
        body=planning.Exclusion,
        response=planning.PlanOut,
        errors=(403, 404, 409),
    )
    async def post(self, plan_id: str) -> None:
        await self.authorize_plan(plan_id)
        self.reply(await planning.exclude(self.ctx, plan_id, self.body.request_id))


class ReplanHandler(PlanStaffHandler):
    @operation(
        "Solve again, keeping pins and exclusions",
        response=planning.Queued,
        status=202,
        errors=(403, 404, 409),
    )
    async def post(self, plan_id: str) -> None:
        await self.authorize_plan(plan_id)
        self.reply(await planning.replan(self.ctx, plan_id))


class PublishPlanHandler(PlanStaffHandler):
    @operation(
        "Publish: every visit becomes an activity volunteers can join as crew; sites are told",
        response=planning.PublishOut,
        errors=(403, 404, 409, 502),
    )
    async def post(self, plan_id: str) -> None:
        await self.authorize_plan(plan_id)
        self.reply(
            await planning.publish(
                self.ctx, plan_id, by=self.user_id, publisher_openid=self.principal.openid
            )
        )


class TripsHandler(ListHandler):
    @operation(
        "Log a caravan's duty day: odometer readings and people reached per visit",
        body=caravans.NewTrip,
        response=Created,
        status=201,
        errors=(403, 404, 409),
        idempotent=True,
    )
    async def post(self) -> None:
        caravan = await caravans.get_caravan_doc(self.ctx, self.body.caravan_id)
        await self.authorize(caravan["org_id"], *PLANNERS)
        trip_id = await caravans.log_trip(self.ctx, self.body, logged_by=self.user_id)
        self.reply(Created(id=str(trip_id)))

    @operation(
        "Trip logs, the latest first, by caravan and dates",
        query=TripQuery,
        response=caravans.TripPage,
        errors=(403,),
    )
    async def get(self) -> None:
        q = self.query
        self.reply(
            await caravans.list_trips(
                self.ctx,
                await self.scope(*PLANNERS),
                caravan_id=q.caravan_id,
                start=q.from_,
                end=q.to,
                cursor=q.cursor,
                limit=q.limit,
            )
        )


class ConfirmVisitHandler(BaseHandler):
    @operation(
        "The site's admin confirms a visit's people reached; the crew is credited its hours",
        response=caravans.VisitConfirmed,
        errors=(403, 404),
        idempotent=True,
    )
    async def post(self, trip_id: str, request_id: str) -> None:
        self.reply(await caravans.confirm_visit(self.ctx, trip_id, request_id, by=self.user_id))


class KpisHandler(BaseHandler):
    @operation(
        "活动次数, 行驶里程 and 受益人次 per caravan and county for a year",
        query=KpiQuery,
        response=caravans.Kpis,
        errors=(403, 404),
    )
    async def get(self) -> None:
        await self.authorize(self.query.org_id, *PLANNERS)
        self.reply(await caravans.kpis(self.ctx, self.query.year, self.query.org_id))


_ID = "[0-9a-f]{24}"
_P = rf"/api/v1/plans/(?P<plan_id>{_ID})"
ROUTES = [
    (r"/api/v1/depots", DepotsHandler),
    (r"/api/v1/caravans", CaravansHandler),
    (r"/api/v1/caravans/kpis", KpisHandler),
    (r"/api/v1/visit-requests", VisitRequestsHandler),
    (r"/api/v1/campaigns", CampaignsHandler),
    (rf"/api/v1/campaigns/(?P<campaign_id>{_ID})", CampaignHandler),
    (r"/api/v1/plans", PlansHandler),
    (_P, PlanHandler),
    (_P + "/pins", PinsHandler),
    (_P + rf"/pins/(?P<request_id>{_ID})", PinHandler),
    (_P + "/exclusions", ExclusionsHandler),
    (_P + "/replan", ReplanHandler),
    (_P + "/publish", PublishPlanHandler),
    (r"/api/v1/trips", TripsHandler),
    (
        rf"/api/v1/trips/(?P<trip_id>{_ID})/visits/(?P<request_id>{_ID})/confirm",
        ConfirmVisitHandler,
    ),
]
