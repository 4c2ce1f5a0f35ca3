"""百名首席科普专家进百县: the association registers experts and their free dates, counties post
expert requests, and the association proposes a match, swaps experts and publishes the visits.
What belongs to the association is checked at the root organisation."""

from __future__ import annotations

from typing import Annotated

import msgspec

from server.domain import access, experts
from server.domain.paging import DEFAULT_LIMIT, MAX_LIMIT
from server.web import ID, BaseHandler, Created, ListQuery, operation


class ExpertQuery(msgspec.Struct, forbid_unknown_fields=True):
    """`field`: only the experts covering this field."""

    field: experts.Field | None = None
    cursor: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT


class ExpertRequestQuery(ListQuery, forbid_unknown_fields=True):
    status: experts.RequestStatus | None = None


class AssociationHandler(BaseHandler):
    async def authorize_root(self) -> None:
        await access.require_root(self.ctx, self.user_id, self.operation.permission)


class ExpertsHandler(AssociationHandler):
    @operation(
        "Register a volunteer as a chief science expert: fields, home city (a city organisation "
        "with its adcode: travel is measured from its seat), free dates; 409 `already_expert`",
        body=experts.NewExpert,
        response=Created,
        status=201,
        errors=(403, 404, 409),
        idempotent=True,
        permission="expert.manage",
    )
    async def post(self) -> None:
        await self.authorize_root()
        expert_id = await experts.register_expert(self.ctx, self.body, by=self.user_id)
        self.reply(Created(id=str(expert_id)))

    @operation(
        "The experts, by field",
        query=ExpertQuery,
        response=experts.ExpertPage,
        errors=(403,),
        permission="expert.manage",
    )
    async def get(self) -> None:
        await self.authorize_root()
        q = self.query
        self.reply(await experts.list_experts(self.ctx, q.field, q.cursor, q.limit))


class FreeDatesHandler(AssociationHandler):
    @operation(
        "Set an expert's free dates (the whole list)",
        body=experts.FreeDates,
        response=experts.ExpertOut,
        errors=(403, 404),
        permission="expert.manage",
    )
    async def put(self, expert_id: str) -> None:
        await self.authorize_root()
        self.reply(await experts.set_free_dates(self.ctx, expert_id, self.body.dates))


class ExpertRequestsHandler(BaseHandler):
    @operation(
        "A county asks for an expert: fields, preferred dates (after today), audience, place",
        body=experts.NewExpertRequest,
        response=Created,
        status=201,
        errors=(403, 404),
        idempotent=True,
        permission="expert.request",
    )
    async def post(self) -> None:
        await self.authorize(self.body.org_id)
        request_id = await experts.create_request(self.ctx, self.body, by=self.user_id)
        self.reply(Created(id=str(request_id)))

    @operation(
        "Expert requests, by status",
        query=ExpertRequestQuery,
        response=experts.ExpertRequestPage,
        errors=(403,),
        permission="expert.request",
    )
    async def get(self) -> None:
        q = self.query
        org_ids = await self.scope(q.org_id)
        self.reply(await experts.list_requests(self.ctx, org_ids, q.status, q.cursor, q.limit))


class MatchesHandler(AssociationHandler):
    @operation(
        "Propose experts for the open requests preferring a date in the period (at most 92 "
        "days): most requests matched, then fields covered, then least travel",
        body=experts.NewMatch,
        response=experts.MatchOut,
        status=201,
        errors=(403,),
        idempotent=True,
        permission="expert.match",
    )
    async def post(self) -> None:
        await self.authorize_root()
        self.reply(await experts.propose(self.ctx, self.body, by=self.user_id))


class MatchHandler(AssociationHandler):
    @operation(
        "A match: its assignments, the requests left unmatched and why, what was published",
        response=experts.MatchOut,
        errors=(403, 404),
        permission="expert.match",
    )
    async def get(self, match_id: str) -> None:
        await self.authorize_root()
        self.reply(await experts.get_match(self.ctx, match_id))


class SwapHandler(AssociationHandler):
    @operation(
        "Give a request of the proposal to another expert: 409 `field_mismatch`, "
        "`expert_unavailable`, `expert_busy` or `monthly_limit` when the expert cannot take it",
        body=experts.Swap,
        response=experts.MatchOut,
        errors=(403, 404, 409),
        permission="expert.match",
    )
    async def post(self, match_id: str) -> None:
        await self.authorize_root()
        self.reply(await experts.swap(self.ctx, match_id, self.body))


class PublishMatchHandler(AssociationHandler):
    @operation(
        "Publish: each visit becomes a published activity of its county; the expert is told",
        response=experts.MatchOut,
        errors=(403, 404, 409, 502),
        permission="expert.match",
    )
    async def post(self, match_id: str) -> None:
        await self.authorize_root()
        self.reply(
            await experts.publish(
                self.ctx, match_id, by=self.user_id, publisher_openid=self.principal.openid
            )
        )


_M = rf"/api/v1/expert-matches/(?P<match_id>{ID})"
ROUTES = [
    (r"/api/v1/experts", ExpertsHandler),
    (rf"/api/v1/experts/(?P<expert_id>{ID})/free-dates", FreeDatesHandler),
    (r"/api/v1/expert-requests", ExpertRequestsHandler),
    (r"/api/v1/expert-matches", MatchesHandler),
    (_M, MatchHandler),
    (_M + "/swap", SwapHandler),
    (_M + "/publish", PublishMatchHandler),
]
