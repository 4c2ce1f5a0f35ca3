"""Volunteers' side of activities: finding them, signing up, leaving, my sign-ups."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from server.domain import activities, discovery, rosters, signups
from server.domain.sites import CoordQuery, CoordType
from server.domain.text import whole
from server.web import ID, BaseHandler, operation

LngLat = Annotated[str, msgspec.Meta(pattern=whole(r"-?\d+(\.\d+)?,-?\d+(\.\d+)?"))]


class DiscoverQuery(msgspec.Struct, forbid_unknown_fields=True):
    from_: Annotated[datetime, msgspec.Meta(tz=True)] | None = msgspec.field(
        default=None, name="from"
    )
    to: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    near: LngLat | None = None
    coord_type: CoordType = "wgs84"
    radius_km: Annotated[float, msgspec.Meta(gt=0, le=500)] = 20.0
    tag: str | None = None
    org_id: str | None = None
    cursor: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20


class CursorQuery(msgspec.Struct, forbid_unknown_fields=True):
    cursor: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20


class DiscoverHandler(BaseHandler):
    @operation("Published activities: by time, tag, organisation, or nearest first",
               query=DiscoverQuery, response=discovery.ActivityPage)  # fmt: skip
    async def get(self) -> None:
        q = self.query
        near = tuple(float(v) for v in q.near.split(",")) if q.near else None
        self.reply(
            await discovery.discover(
                self.ctx,
                start=q.from_,
                end=q.to,
                near=near,
                coord_type=q.coord_type,
                radius_km=q.radius_km,
                tag=q.tag,
                org_id=q.org_id,
                cursor=q.cursor,
                limit=q.limit,
            )
        )


class ActivityHandler(BaseHandler):
    @operation(
        "One published activity, its location in the coord_type asked for",
        query=CoordQuery,
        response=activities.Activity,
        errors=(404,),
    )
    async def get(self, activity_id: str) -> None:
        self.reply(
            await activities.get_activity(
                self.ctx, activity_id, public=True, coord_type=self.query.coord_type
            )
        )


class SignupHandler(BaseHandler):
    @operation(
        "Sign up: confirmed, waitlisted or pending; the same again returns the same record",
        response=signups.SignupOut,
        status=201,
        statuses=(200,),
        errors=(404, 409),
        idempotent=True,
    )
    async def post(self, activity_id: str) -> None:
        record, created = await signups.sign_up(self.ctx, self.user_id, activity_id)
        self.reply(record, status=201 if created else 200)

    @operation(
        "Leave an activity; the first on the waitlist moves up at once",
        response=signups.SignupOut,
        errors=(404, 409),
        idempotent=True,
    )
    async def delete(self, activity_id: str) -> None:
        self.reply(await signups.cancel_signup(self.ctx, self.user_id, activity_id))


class MySignupsHandler(BaseHandler):
    @operation("My sign-ups, newest first", query=CursorQuery, response=rosters.MySignupPage)
    async def get(self) -> None:
        self.reply(
            await rosters.my_signups(self.ctx, self.user_id, self.query.cursor, self.query.limit)
        )


ROUTES = [
    (r"/mp/v1/activities", DiscoverHandler),
    (rf"/mp/v1/activities/(?P<activity_id>{ID})", ActivityHandler),
    (rf"/mp/v1/activities/(?P<activity_id>{ID})/signup", SignupHandler),
    (r"/mp/v1/me/signups", MySignupsHandler),
]
