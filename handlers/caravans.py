"""科普大篷车: depots, caravans, visit requests, campaigns pooling caravans across counties,
plans (create, review, pin, exclude, re-plan, publish), trip logs with the site's confirmation,
and the caravan KPIs. Every collection lists with a cursor, limited to what the caller may see."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import msgspec

from server.domain import campaigns, caravans, planning, sites
from server.domain.ids import parse_id
from server.domain.stats import caravan_kpis
from server.web import ID, XLSX, BaseHandler, Created, ListQuery, operation


class KpiQuery(msgspec.Struct, forbid_unknown_fields=True):
    year: Annotated[int, msgspec.Meta(ge=2000, le=2100)]
    org_id: str


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


class DepotsHandler(BaseHandler):
    @operation(
        "Register a depot (a county depot or a shared centre)",
        body=caravans.NewDepot,
        response=Created,
        status=201,
        errors=(403, 404),
        idempotent=True,
        permission="fleet.manage",
    )
    async def post(self) -> None:
        await self.authorize(self.body.org_id)
        depot_id = await caravans.create_depot(self.ctx, self.body, created_by=self.user_id)
        self.reply(Created(id=str(depot_id)))

    @operation(
        "Depots",
        query=ListQuery,
        response=caravans.DepotPage,
        errors=(403,),
        permission="fleet.manage",
    )
    async def get(self) -> None:
        q = self.query
        self.reply(
            await caravans.list_depots(self.ctx, await self.scope(q.org_id), q.cursor, q.limit)
        )


class CaravansHandler(BaseHandler):
    @operation(
        "Register a caravan (vehicle type Ⅰ/Ⅱ/Ⅳ, plate, home depot, crew size)",
        body=caravans.NewCaravan,
        response=Created,
        status=201,
        errors=(403, 404, 409),
        idempotent=True,
        permission="fleet.manage",
    )
    async def post(self) -> None:
        await self.authorize(self.body.org_id)
        caravan_id = await caravans.create_caravan(self.ctx, self.body, created_by=self.user_id)
        self.reply(Created(id=str(caravan_id)))

    @operation(
        "Caravans",
        query=ListQuery,
        response=caravans.CaravanPage,
        errors=(403,),
        permission="fleet.manage",
    )
    async def get(self) -> None:
        q = self.query
        self.reply(
            await caravans.list_caravans(self.ctx, await self.scope(q.org_id), q.cursor, q.limit)
        )


class CaravanStaffHandler(BaseHandler):
    async def authorize_caravan(self, caravan_id: str) -> None:
        await self.authorize((await caravans.get_caravan_doc(self.ctx, caravan_id))["org_id"])


class CaravanHandler(CaravanStaffHandler):
    @operation(
        "Change a caravan's name, plate, vehicle type, crew size or home depot",
        body=caravans.CaravanChange,
        response=caravans.CaravanOut,
        errors=(403, 404, 409),
        permission="fleet.manage",
    )
    async def patch(self, caravan_id: str) -> None:
        await self.authorize_caravan(caravan_id)
        self.reply(await caravans.edit_caravan(self.ctx, caravan_id, self.body, by=self.user_id))


class RetireCaravanHandler(CaravanStaffHandler):
    @operation(
        "Retire a caravan: never planned again; its trips and KPIs stay",
        response=caravans.CaravanOut,
        errors=(403, 404),
        permission="fleet.manage",
    )
    async def post(self, caravan_id: str) -> None:
        await self.authorize_caravan(caravan_id)
        self.reply(await caravans.retire_caravan(self.ctx, caravan_id, by=self.user_id))


class UnavailableHandler(CaravanStaffHandler):
    @operation(
        "Set a caravan's maintenance days (the whole list): plans make no caravan-day of them",
        body=caravans.Unavailable,
        response=caravans.CaravanOut,
        errors=(403, 404),
        permission="fleet.manage",
    )
    async def put(self, caravan_id: str) -> None:
        await self.authorize_caravan(caravan_id)
        self.reply(await caravans.set_unavailable(self.ctx, caravan_id, self.body.dates))


class YearQuery(msgspec.Struct, forbid_unknown_fields=True):
    year: Annotated[int, msgspec.Meta(ge=2000, le=2100)]


class TargetHandler(CaravanStaffHandler):
    @operation(
        "A caravan's target for a year (field days, km) and its confirmed progress toward it",
        query=YearQuery,
        response=caravans.TargetProgress,
        errors=(403, 404),
        permission="plan.dispatch",
    )
    async def get(self, caravan_id: str) -> None:
        await self.authorize_caravan(caravan_id)
        self.reply(await caravans.get_target(self.ctx, caravan_id, self.query.year))

    @operation(
        "The association sets a caravan's target for a year (field days and/or km; neither "
        "removes it)",
        body=caravans.YearTarget,
        response=caravans.TargetProgress,
        errors=(403, 404),
        permission="target.set",
    )
    async def put(self, caravan_id: str) -> None:
        await self.authorize_caravan(caravan_id)
        self.reply(await caravans.set_target(self.ctx, caravan_id, self.body, by=self.user_id))


class VisitRequestsHandler(BaseHandler):
    @operation(
        "A site asks for a caravan visit within a date range (its admin, or a dispatcher)",
        body=caravans.NewVisitRequest,
        response=Created,
        status=201,
        errors=(403, 404),
        idempotent=True,
        permission="visit.request",
    )
    async def post(self) -> None:
        await self.authorize(site=await sites.get_site_doc(self.ctx, self.body.site_id))
        request_id = await caravans.create_request(self.ctx, self.body, created_by=self.user_id)
        self.reply(Created(id=str(request_id)))

    @operation(
        "Visit requests, by status, site and the dates they may be visited",
        query=VisitRequestQuery,
        response=caravans.VisitRequestPage,
        errors=(403,),
        permission="visit.read",
    )
    async def get(self) -> None:
        q = self.query
        org_ids, site_ids = await self.scopes(q.org_id)
        self.reply(
            await caravans.list_requests(
                self.ctx,
                org_ids,
                site_ids=site_ids,
                status=q.status,
                site_id=q.site_id,
                start=q.from_,
                end=q.to,
                cursor=q.cursor,
                limit=q.limit,
            )
        )


class DeclineRequestHandler(BaseHandler):
    @operation(
        "A dispatcher declines a request, with a reason the site's admins are sent; a scheduled "
        "one's visit is withdrawn (its activity cancelled, the crew told) unless a trip logged it",
        body=caravans.Decline,
        response=caravans.VisitRequestOut,
        errors=(403, 404, 409),
        permission="plan.dispatch",
    )
    async def post(self, request_id: str) -> None:
        request = await caravans.get_request_doc(self.ctx, request_id)
        await self.authorize(request["org_id"])
        self.reply(
            await caravans.decline(self.ctx, request["_id"], self.body.reason, by=self.user_id)
        )


class CancelRequestHandler(BaseHandler):
    @operation(
        "The site's admin (or a dispatcher) cancels a request; a scheduled one's visit is "
        "withdrawn (its activity cancelled, the crew told) unless a trip logged it",
        response=caravans.VisitRequestOut,
        errors=(403, 404, 409),
        permission="visit.request",
    )
    async def post(self, request_id: str) -> None:
        request = await caravans.get_request_doc(self.ctx, request_id)
        await self.authorize(site=await sites.get_site_doc(self.ctx, request["site_id"]))
        self.reply(await caravans.cancel(self.ctx, request["_id"], by=self.user_id))


class OrgQuery(msgspec.Struct, forbid_unknown_fields=True):
    org_id: str


class RequestTemplateHandler(BaseHandler):
    @operation(
        "The workbook to fill with a season's requests (a sheet lists the organisation's sites)",
        query=OrgQuery,
        errors=(403, 404),
        content_type=XLSX,
        permission="plan.dispatch",
    )
    async def get(self) -> None:
        await self.authorize(self.query.org_id)
        org = parse_id(self.query.org_id, "org_id")
        body = await caravans.request_template(self.ctx, org)
        self.send_file(body, XLSX, "visit-requests-template.xlsx")


class ImportRequestsHandler(BaseHandler):
    @operation(
        "Import a season's requests: the filled template as the body (xlsx); every row is "
        "checked first, and any bad row (named with its column) imports nothing",
        query=OrgQuery,
        response=caravans.Imported,
        status=201,
        errors=(403, 404),
        idempotent=True,
        permission="plan.dispatch",
    )
    async def post(self) -> None:
        await self.authorize(self.query.org_id)
        org = parse_id(self.query.org_id, "org_id")
        body = self.request.body or b""
        self.reply(await caravans.import_requests(self.ctx, org, body, created_by=self.user_id))


class CampaignsHandler(BaseHandler):
    @operation(
        "Pool caravans of several counties for a period (沿黄科普行-style tours)",
        body=campaigns.NewCampaign,
        response=Created,
        status=201,
        errors=(403, 404, 409),
        idempotent=True,
        permission="plan.dispatch",
    )
    async def post(self) -> None:
        await self.authorize(self.body.org_id)
        campaign_id = await campaigns.create_campaign(self.ctx, self.body, created_by=self.user_id)
        self.reply(Created(id=str(campaign_id)))

    @operation(
        "Campaigns, newest first",
        query=ListQuery,
        response=campaigns.CampaignPage,
        errors=(403,),
        permission="plan.dispatch",
    )
    async def get(self) -> None:
        q = self.query
        self.reply(
            await campaigns.list_campaigns(self.ctx, await self.scope(q.org_id), q.cursor, q.limit)
        )


class CampaignHandler(BaseHandler):
    @operation(
        "A campaign", response=campaigns.CampaignOut, errors=(403, 404), permission="plan.dispatch"
    )
    async def get(self, campaign_id: str) -> None:
        campaign = await campaigns.get_campaign(self.ctx, campaign_id)
        await self.authorize(campaign.org_id)
        self.reply(campaign)


class PlansHandler(BaseHandler):
    @operation(
        "Plan the caravans' visits over a date range; solved in the background",
        body=planning.NewPlan,
        response=planning.Queued,
        status=202,
        errors=(403, 404),
        idempotent=True,
        permission="plan.dispatch",
    )
    async def post(self) -> None:
        await self.authorize(self.body.org_id)
        plan_id = await planning.create_plan(self.ctx, self.body, created_by=self.user_id)
        self.reply(planning.Queued(id=str(plan_id), status="queued"))

    @operation(
        "Plans, newest first, without their routes",
        query=ListQuery,
        response=planning.PlanPage,
        errors=(403,),
        permission="plan.dispatch",
    )
    async def get(self) -> None:
        q = self.query
        self.reply(
            await planning.list_plans(self.ctx, await self.scope(q.org_id), q.cursor, q.limit)
        )


class PlanStaffHandler(BaseHandler):
    async def authorize_plan(self, plan_id: str) -> None:
        await self.authorize(await planning.plan_org(self.ctx, plan_id))


class PlanHandler(PlanStaffHandler):
    @operation(
        "A plan: status, progress while solving, routes with arrival and departure per stop",
        response=planning.PlanOut,
        errors=(403, 404),
        permission="plan.dispatch",
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
        permission="plan.dispatch",
    )
    async def post(self, plan_id: str) -> None:
        await self.authorize_plan(plan_id)
        self.reply(await planning.pin(self.ctx, plan_id, self.body))


class PinHandler(PlanStaffHandler):
    @operation(
        "Remove a pin",
        response=planning.PlanOut,
        errors=(403, 404, 409),
        permission="plan.dispatch",
    )
    async def delete(self, plan_id: str, request_id: str) -> None:
        await self.authorize_plan(plan_id)
        self.reply(await planning.unpin(self.ctx, plan_id, request_id))


class ExclusionsHandler(PlanStaffHandler):
    @operation(
        "Remove a visit from the plan (holds at the next re-plan)",
        body=planning.Exclusion,
        response=planning.PlanOut,
        errors=(403, 404, 409),
        permission="plan.dispatch",
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
        permission="plan.dispatch",
    )
    async def post(self, plan_id: str) -> None:
        await self.authorize_plan(plan_id)
        self.reply(await planning.replan(self.ctx, plan_id))


class PublishPlanHandler(PlanStaffHandler):
    @operation(
        "Publish: every visit becomes an activity volunteers can join as crew; sites are told",
        response=planning.PublishOut,
        errors=(403, 404, 409, 502),
        permission="plan.dispatch",
    )
    async def post(self, plan_id: str) -> None:
        await self.authorize_plan(plan_id)
        self.reply(
            await planning.publish(
                self.ctx, plan_id, by=self.user_id, publisher_openid=self.principal.openid
            )
        )


class TripsHandler(BaseHandler):
    @operation(
        "Log a caravan's duty day: odometer readings and people reached per visit",
        body=caravans.NewTrip,
        response=Created,
        status=201,
        errors=(403, 404, 409),
        idempotent=True,
        permission="trip.log",
    )
    async def post(self) -> None:
        caravan = await caravans.get_caravan_doc(self.ctx, self.body.caravan_id)
        await self.authorize(caravan["org_id"])
        trip_id = await caravans.log_trip(self.ctx, self.body, logged_by=self.user_id)
        self.reply(Created(id=str(trip_id)))

    @operation(
        "Trip logs, the latest first, by caravan and dates",
        query=TripQuery,
        response=caravans.TripPage,
        errors=(403,),
        permission="trip.log",
    )
    async def get(self) -> None:
        q = self.query
        self.reply(
            await caravans.list_trips(
                self.ctx,
                await self.scope(q.org_id),
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
        permission="visit.confirm",
    )
    async def post(self, trip_id: str, request_id: str) -> None:
        self.reply(await caravans.confirm_visit(self.ctx, trip_id, request_id, by=self.user_id))


class KpisHandler(BaseHandler):
    @operation(
        "活动次数, 行驶里程 and 受益人次 per caravan and county for a year",
        query=KpiQuery,
        response=caravan_kpis.Kpis,
        errors=(403, 404),
        permission="plan.dispatch",
    )
    async def get(self) -> None:
        await self.authorize(self.query.org_id)
        self.reply(await caravan_kpis.kpis(self.ctx, self.query.year, self.query.org_id))


_P = rf"/api/v1/plans/(?P<plan_id>{ID})"
ROUTES = [
    (r"/api/v1/depots", DepotsHandler),
    (r"/api/v1/caravans", CaravansHandler),
    (r"/api/v1/caravans/kpis", KpisHandler),
    (rf"/api/v1/caravans/(?P<caravan_id>{ID})", CaravanHandler),
    (rf"/api/v1/caravans/(?P<caravan_id>{ID})/retire", RetireCaravanHandler),
    (rf"/api/v1/caravans/(?P<caravan_id>{ID})/unavailable", UnavailableHandler),
    (rf"/api/v1/caravans/(?P<caravan_id>{ID})/targets", TargetHandler),
    (r"/api/v1/visit-requests", VisitRequestsHandler),
    (r"/api/v1/visit-requests/template\.xlsx", RequestTemplateHandler),
    (r"/api/v1/visit-requests/import", ImportRequestsHandler),
    (rf"/api/v1/visit-requests/(?P<request_id>{ID})/decline", DeclineRequestHandler),
    (rf"/api/v1/visit-requests/(?P<request_id>{ID})/cancel", CancelRequestHandler),
    (r"/api/v1/campaigns", CampaignsHandler),
    (rf"/api/v1/campaigns/(?P<campaign_id>{ID})", CampaignHandler),
    (r"/api/v1/plans", PlansHandler),
    (_P, PlanHandler),
    (_P + "/pins", PinsHandler),
    (_P + rf"/pins/(?P<request_id>{ID})", PinHandler),
    (_P + "/exclusions", ExclusionsHandler),
    (_P + "/replan", ReplanHandler),
    (_P + "/publish", PublishPlanHandler),
    (r"/api/v1/trips", TripsHandler),
    (
        rf"/api/v1/trips/(?P<trip_id>{ID})/visits/(?P<request_id>{ID})/confirm",
        ConfirmVisitHandler,
    ),
]
