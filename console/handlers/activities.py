"""活动: the activities the caller organises (filters by date, status, organisation and tag;
cursor paging through htmx), creating one, editing it (`activities.update_activity`: the times
only while a draft), publishing and cancelling, the roster with its waitlist and workbook, and
the full-screen check-in code for a projector.
"""

from __future__ import annotations

import re
from datetime import timedelta

from console.handlers.staff import StaffPage, parse_form, shanghai_time
from server.clock import SHANGHAI
from server.domain import (
    activities,
    activity_lists,
    attendance,
    identity,
    orgs,
    rosters,
    signups,
    sites,
)
from server.domain.errors import DomainError, Forbidden, InvalidRequest
from server.domain.ids import parse_id
from server.web import ID, XLSX

ORGANISE = "activity.organise"
STATUS_NAMES = {
    "draft": "草稿",
    "published": "已发布",
    "ongoing": "进行中",
    "finished": "已结束",
    "cancelled": "已取消",
}
PAGE_SIZE = 20
SITE_CHOICES = 100  # the create form's site list; more are reached through the 站点 page
MAX_REASON = 200  # as the API's CancelRequest
REFRESH_MARGIN_S = 60  # the projector reloads this long before its code expires
_TAG_SPLIT = re.compile(r"[,，、\s]+")


def _activity_values(page: StaffPage) -> dict:
    """The create form as the API's body: times are Asia/Shanghai, tags split on commas."""
    values: dict = {
        "title": page.get_argument("title", ""),
        "description": page.get_argument("description", ""),
        "org_id": page.arg("org_id"),
        "site_id": page.arg("site_id"),
        "address": page.arg("address"),
        "starts_at": shanghai_time(page.arg("starts_at"), "starts_at"),
        "ends_at": shanghai_time(page.arg("ends_at"), "ends_at"),
        "signup_deadline": shanghai_time(page.arg("signup_deadline"), "signup_deadline"),
        "capacity": page.arg("capacity"),
        "tags": [t for t in _TAG_SPLIT.split(page.get_argument("tags", "")) if t],
        "approval": page.arg("approval") or "auto",
        "waitlist": page.get_argument("waitlist", "") == "on",
    }
    return {k: v for k, v in values.items() if v is not None}


class ActivitiesPage(StaffPage):
    nav = "activities"

    async def get(self) -> None:
        org_id = self.arg("org_id")
        status = self.arg("status") if self.arg("status") in STATUS_NAMES else None
        start = shanghai_time(self.arg("from"), "from")
        end = shanghai_time(self.arg("to"), "to")
        scope = await self.scope(ORGANISE, org_id)
        result = await activity_lists.list_activities(
            self.ctx,
            scope,
            status=status,
            tag=self.arg("tag"),
            start=start,
            end=end + timedelta(days=1) if end else None,  # the last day included
            cursor=self.arg("cursor"),
            limit=PAGE_SIZE,
        )
        filters = {
            "from": self.arg("from") or "",
            "to": self.arg("to") or "",
            "status": status or "",
            "org_id": org_id or "",
            "tag": self.arg("tag") or "",
        }
        self.render(
            "activities_list.html" if self.is_fragment() else "activities.html",
            result=result,
            filters=filters,
            statuses=STATUS_NAMES,
            orgs=await orgs.describe(self.ctx, await self.scope(ORGANISE)),
            org_names={o.id: o.name for o in await orgs.describe(self.ctx, scope)},
        )

    async def post(self) -> None:
        """Create a draft, then show it."""
        await self.require_anywhere(ORGANISE)
        try:
            new = parse_form(activities.NewActivity, _activity_values(self))
            await self.require(ORGANISE, new.org_id)
            activity_id = await activities.create_activity(self.ctx, new, created_by=self.staff_id)
        except Forbidden:
            raise
        except DomainError as exc:
            await new_activity_form(self, exc)
            return
        self.redirect(f"/console/activities/{activity_id}")


async def new_activity_form(page: StaffPage, error: DomainError | None = None) -> None:
    """The create form; after a refusal, the values sent and the message beside its field."""
    scope = await page.scope(ORGANISE)
    choices = await sites.list_sites(page.ctx, scope, limit=SITE_CHOICES)
    page.set_status(400 if error else 200)
    page.render(
        "activities_new.html",
        orgs=await orgs.describe(page.ctx, scope),
        sites=choices.items,
        error=error,
        values={k: page.get_body_argument(k, "") for k in page.request.body_arguments},
    )


class NewActivityPage(StaffPage):
    nav = "activities"

    async def get(self) -> None:
        await new_activity_form(self)


class ActivityBase(StaffPage):
    nav = "activities"

    async def authorize(self, activity_id: str) -> None:
        await self.require(ORGANISE, await activities.staff_org(self.ctx, activity_id))

    async def show(self, activity_id: str, error: DomainError | None = None) -> None:
        await self.authorize(activity_id)
        activity = await activities.get_activity(self.ctx, activity_id)
        org = await orgs.get_org(self.ctx, parse_id(activity.org_id))
        site = await sites.get_site(self.ctx, activity.site_id) if activity.site_id else None
        self.set_status(400 if error else 200)
        self.render(
            "activities_detail.html",
            a=activity,
            org_name=org["name"],
            site=site,
            roster=await rosters.roster(self.ctx, activity_id),
            statuses=STATUS_NAMES,
            error=error,
            done=self.get_query_argument("done", ""),
        )


class ActivityPage(ActivityBase):
    async def get(self, activity_id: str) -> None:
        await self.show(activity_id)


EDITABLE = ("title", "description", "address", "starts_at", "ends_at", "signup_deadline", "tags")


class EditPage(ActivityBase):
    async def get(self, activity_id: str) -> None:
        await self.authorize(activity_id)
        a = await activities.get_activity(self.ctx, activity_id)
        values = {
            "title": a.title,
            "description": a.description,
            "address": a.address or "",
            "tags": "，".join(a.tags),
            **{
                name: getattr(a, name).astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")
                for name in ("starts_at", "ends_at", "signup_deadline")
            },
        }
        self.render("activities_edit.html", a=a, values=values, error=None)

    async def post(self, activity_id: str) -> None:
        await self.authorize(activity_id)
        a = await activities.get_activity(self.ctx, activity_id)
        sent = {k: v for k, v in _activity_values(self).items() if k in EDITABLE}
        if a.status != "draft":  # the form shows them read-only; a stale form must not move them
            sent = {k: v for k, v in sent.items() if k not in ("starts_at", "ends_at")}
        try:
            change = parse_form(activities.ActivityChange, sent)
            openid = await identity.openid_of(self.ctx, self.staff_id)
            await activities.update_activity(self.ctx, activity_id, change, editor_openid=openid)
        except Forbidden:
            raise
        except DomainError as exc:
            self.set_status(400)
            values = {k: self.get_body_argument(k, "") for k in self.request.body_arguments}
            self.render("activities_edit.html", a=a, values=values, error=exc)
            return
        self.redirect(f"/console/activities/{activity_id}?done=edited")


class PublishPage(ActivityBase):
    async def post(self, activity_id: str) -> None:
        await self.authorize(activity_id)
        openid = await identity.openid_of(self.ctx, self.staff_id)
        try:
            await activities.publish(self.ctx, activity_id, publisher_openid=openid)
        except Forbidden:
            raise
        except DomainError as exc:
            await self.show(activity_id, exc)
            return
        self.redirect(f"/console/activities/{activity_id}?done=published")


class CancelPage(ActivityBase):
    async def post(self, activity_id: str) -> None:
        """Every sign-up ends and everyone signed up is told the reason."""
        await self.authorize(activity_id)
        reason = self.get_argument("reason", "").strip()
        try:
            if len(reason) > MAX_REASON:
                raise InvalidRequest(f"取消原因不能超过 {MAX_REASON} 字", field="reason")
            await signups.cancel_activity(self.ctx, activity_id, reason=reason or None)
        except Forbidden:
            raise
        except DomainError as exc:
            await self.show(activity_id, exc)
            return
        self.redirect(f"/console/activities/{activity_id}?done=cancelled")


class RosterWorkbookPage(ActivityBase):
    async def get(self, activity_id: str) -> None:
        await self.authorize(activity_id)
        body = await rosters.roster_workbook(self.ctx, activity_id)
        self.set_header("Content-Type", XLSX)
        self.set_header("Content-Disposition", f'attachment; filename="roster-{activity_id}.xlsx"')
        self.finish(body)


class CheckinCodePage(StaffPage):
    """The code to show on site, full screen; it reloads itself before the code expires."""

    async def get(self, activity_id: str) -> None:
        await self.require_anywhere("checkin.show")
        code = await attendance.checkin_code(self.ctx, activity_id, by=self.staff_id)
        activity = await activities.get_activity(self.ctx, activity_id)
        left = (code.expires_at - self.ctx.clock.now()).total_seconds()
        self.render(
            "activities_checkin.html",
            a=activity,
            code=code,
            refresh_s=max(10, int(left) - REFRESH_MARGIN_S),
        )


ROUTES = [
    (r"/console/activities", ActivitiesPage),
    (r"/console/activities/new", NewActivityPage),
    (rf"/console/activities/(?P<activity_id>{ID})", ActivityPage),
    (rf"/console/activities/(?P<activity_id>{ID})/edit", EditPage),
    (rf"/console/activities/(?P<activity_id>{ID})/publish", PublishPage),
    (rf"/console/activities/(?P<activity_id>{ID})/cancel", CancelPage),
    (rf"/console/activities/(?P<activity_id>{ID})/roster\.xlsx", RosterWorkbookPage),
    (rf"/console/activities/(?P<activity_id>{ID})/checkin", CheckinCodePage),
]
