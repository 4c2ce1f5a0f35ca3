"""Organisations and the roles held in them."""

from __future__ import annotations

from typing import Annotated

import msgspec

from handlers.api import operation
from handlers.base import BaseHandler
from server.domain import identity, orgs
from server.domain.ids import parse_id


class NewOrg(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    kind: orgs.OrgKind
    parent_id: str
    adcode: Annotated[str, msgspec.Meta(pattern=r"^\d{6}$")] | None = None


class Created(msgspec.Struct):
    id: str


class OrgList(msgspec.Struct):
    items: list[orgs.Org]


class NewGrant(msgspec.Struct, forbid_unknown_fields=True):
    user_id: str
    role: orgs.Role


class GrantResult(msgspec.Struct):
    user_id: str
    role: str
    org_id: str
    created: bool


class OrgsHandler(BaseHandler):
    @operation(
        "Create an organisation under a parent (org_admin of the parent)",
        body=NewOrg,
        response=Created,
        status=201,
        errors=(403, 404),
        idempotent=True,
    )
    async def post(self) -> None:
        parent_id = parse_id(self.body.parent_id, "parent_id")
        await self.authorize(parent_id, "org_admin")
        org_id = await orgs.create_org(
            self.ctx,
            self.body.name,
            self.body.kind,
            parent_id,
            adcode=self.body.adcode,
            created_by=self.user_id,
        )
        self.reply(Created(id=str(org_id)))

    @operation("The organisations the caller may see", response=OrgList)
    async def get(self) -> None:
        self.reply(OrgList(items=await orgs.visible_orgs(self.ctx, self.user_id)))


class OrgRolesHandler(BaseHandler):
    @operation(
        "Grant a role in this organisation (org_admin only)",
        body=NewGrant,
        response=GrantResult,
        errors=(403, 404),
    )
    async def post(self, org_id: str) -> None:
        await self.authorize(org_id, "org_admin")
        user_id = parse_id(self.body.user_id, "user_id")
        await identity.get_user(self.ctx, user_id)
        created = await orgs.grant_role(
            self.ctx, user_id, self.body.role, parse_id(org_id), granted_by=self.user_id
        )
        self.reply(
            GrantResult(user_id=str(user_id), role=self.body.role, org_id=org_id, created=created),
            status=201 if created else 200,
        )


ROUTES = [
    (r"/api/v1/orgs", OrgsHandler),
    (r"/api/v1/orgs/(?P<org_id>[0-9a-f]{24})/roles", OrgRolesHandler),
]
