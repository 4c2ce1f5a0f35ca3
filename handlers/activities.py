"""Organisers' side of i科普 activities: projects, activities, publishing, rosters, approvals."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from server.domain import activities, activity_lists, projects, rosters, signups, sites
from server.domain.ids import parse_id
from server.domain.text import lines
from server.web import ID, XLSX, BaseHandler, Created, ListQuery, operation


class CreatedActivity(msgspec.Struct):
    id: str
    status: str


class CancelRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: lines(200, 0) | None = None


class CapacityRequest(msgspec.Struct, forbid_unknown_fields=True):
    capacity: Annotated[int, msgspec.Meta(ge=1, le=100_000)]
    overflow: Literal["refuse", "waitlist"] = "refuse"


class RosterQuery(msgspec.Struct, forbid_unknown_fields=True):
    format: Literal["json", "xlsx"] = "json"


class ActivityStaffHandler(BaseHandler):
    """Base for endpoints on one activity: the caller must organise in its organisation."""

    async def authorize_activity(self, activity_id: str) -> None:
        await self.authorize(await activities.staff_org(self.ctx, activity_id))


class ProjectsHandler(BaseHandler):
    @operation(
        "Create an i科普 project",
        body=projects.NewProject,
        response=Created,
        status=201,
        errors=(403, 404),
        idempotent=True,
        permission="activity.organise",
    )
    async def post(self) -> None:
        await self.authorize(self.body.org_id)
        project_id = await projects.create_project(self.ctx, self.body, created_by=self.user_id)
        self.reply(Created(id=str(project_id)))


class ActivityQuery(ListQuery, forbid_unknown_fields=True):
    """`from`/`to`: activities starting within these times; `coord_type`: the system of the
    locations (WGS-84 unless asked; gcj02 for WeChat maps)."""

    status: activities.Status | None = None
    tag: activities.Tag | None = None
    site_id: str | None = None
    from_: activities.AwareDatetime | None = msgspec.field(default=None, name="from")
    to: activities.AwareDatetime | None = None
    coord_type: sites.CoordType = "wgs84"


class ActivitiesHandler(BaseHandler):
    @operation(
        "Create an activity (a draft until published)",
        body=activities.NewActivity,
        response=CreatedActivity,
        status=201,
        errors=(403, 404, 503),
        idempotent=True,
        permission="activity.organise",
    )
    async def post(self) -> None:
        await self.authorize(self.body.org_id)
        activity_id = await activities.create_activity(self.ctx, self.body, created_by=self.user_id)
        self.reply(CreatedActivity(id=str(activity_id), status="draft"))

    @operation(
        "Activities of the organisations the caller organises, the latest created first",
        query=ActivityQuery,
        response=activity_lists.ActivityList,
        errors=(403, 404),
        permission="activity.organise",
    )
    async def get(self) -> None:
        q = self.query
        self.reply(
            await activity_lists.list_activities(
                self.ctx,
                await self.scope(q.org_id),
                status=q.status,
                tag=q.tag,
                site_id=q.site_id,
                start=q.from_,
                end=q.to,
                cursor=q.cursor,
                limit=q.limit,
                coord_type=q.coord_type,
            )
        )


class ActivityHandler(ActivityStaffHandler):
    @operation(
        "An activity, as its organisers see it, its location in the coord_type asked for",
        query=sites.CoordQuery,
        response=activities.Activity,
        errors=(403, 404),
        permission="activity.organise",
    )
    async def get(self, activity_id: str) -> None:
        await self.authorize_activity(activity_id)
        self.reply(
            await activities.get_activity(self.ctx, activity_id, coord_type=self.query.coord_type)
        )

    @operation(
        "Change an activity: its text, tags, deadline and check-in; its times while a draft",
        body=activities.ActivityChange,
        response=activities.Activity,
        errors=(403, 404, 409, 502),
        idempotent=True,
        permission="activity.organise",
    )
    async def patch(self, activity_id: str) -> None:
        await self.authorize_activity(activity_id)
        self.reply(
            await activities.update_activity(
                self.ctx, activity_id, self.body, editor_openid=self.principal.openid
            )
        )


class PublishHandler(ActivityStaffHandler):
    @operation(
        "Publish: checked by WeChat's content security, then open for sign-up",
        response=activities.StatusOut,
        errors=(403, 404, 409, 502),
        permission="activity.organise",
    )
    async def post(self, activity_id: str) -> None:
        await self.authorize_activity(activity_id)
        status = await activities.publish(
            self.ctx, activity_id, publisher_openid=self.principal.openid
        )
        self.reply(activities.StatusOut(status=status))


class CancelHandler(ActivityStaffHandler):
    @operation(
        "Cancel: every sign-up ends and everyone signed up is told",
        body=CancelRequest,
        response=activities.StatusOut,
        errors=(403, 404, 409),
        permission="activity.organise",
    )
    async def post(self, activity_id: str) -> None:
        await self.authorize_activity(activity_id)
        status = await signups.cancel_activity(self.ctx, activity_id, reason=self.body.reason)
        self.reply(activities.StatusOut(status=status))


class RosterHandler(ActivityStaffHandler):
    @operation(
        "Who is confirmed, waiting and pending (format=xlsx for a workbook)",
        query=RosterQuery,
        response=rosters.Roster,
        content_types=(XLSX,),
        errors=(403, 404),
        permission="activity.organise",
    )
    async def get(self, activity_id: str) -> None:
        await self.authorize_activity(activity_id)
        if self.query.format == "xlsx":
            body = await rosters.roster_workbook(self.ctx, activity_id)
            self.send_file(body, XLSX, f"roster-{activity_id}.xlsx")
            return
        self.reply(await rosters.roster(self.ctx, activity_id))


class CapacityHandler(ActivityStaffHandler):
    @operation(
        "Raise or lower capacity; lowering never drops confirmed people silently",
        body=CapacityRequest,
        response=signups.CapacityChange,
        errors=(403, 404, 409),
        permission="activity.organise",
    )
    async def post(self, activity_id: str) -> None:
        await self.authorize_activity(activity_id)
        self.reply(
            await signups.change_capacity(
                self.ctx, activity_id, self.body.capacity, self.body.overflow
            )
        )


class DecisionHandler(ActivityStaffHandler):
    @operation(
        "Approve or reject a pending sign-up",
        response=signups.SignupOut,
        errors=(403, 404, 409),
        permission="activity.organise",
    )
    async def post(self, activity_id: str, user_id: str, decision: str) -> None:
        await self.authorize_activity(activity_id)
        self.reply(
            await signups.decide(self.ctx, activity_id, parse_id(user_id, "user_id"), decision)
        )


class ReachHandler(ActivityStaffHandler):
    @operation(
        "Report how many people the activity reached (受益人次); a later report replaces it",
        body=activities.Reach,
        response=activities.ReachOut,
        errors=(403, 404, 409),
        idempotent=True,
        permission="activity.organise",
    )
    async def put(self, activity_id: str) -> None:
        await self.authorize_activity(activity_id)
        self.reply(await activities.report_reach(self.ctx, activity_id, self.body))


ROUTES = [
    (r"/api/v1/projects", ProjectsHandler),
    (r"/api/v1/activities", ActivitiesHandler),
    (rf"/api/v1/activities/(?P<activity_id>{ID})", ActivityHandler),
    (rf"/api/v1/activities/(?P<activity_id>{ID})/publish", PublishHandler),
    (rf"/api/v1/activities/(?P<activity_id>{ID})/cancel", CancelHandler),
    (rf"/api/v1/activities/(?P<activity_id>{ID})/roster", RosterHandler),
    (rf"/api/v1/activities/(?P<activity_id>{ID})/capacity", CapacityHandler),
    (rf"/api/v1/activities/(?P<activity_id>{ID})/reach", ReachHandler),
    (
        rf"/api/v1/activities/(?P<activity_id>{ID})/signups/(?P<user_id>{ID})/(?P<decision>approve|reject)",
        DecisionHandler,
    ),
]
