"""Organisations, the roles held in them, and disabling a user."""

from __future__ import annotations

import msgspec

from server.domain import access, identity, orgs
from server.domain.errors import NotFound
from server.domain.ids import parse_id
from server.domain.text import ADCODE, line
from server.web import ID, BaseHandler, Created, operation


class NewOrg(msgspec.Struct, forbid_unknown_fields=True):
    name: line(100)
    kind: orgs.OrgKind
    parent_id: str
    adcode: ADCODE | None = None


class OrgList(msgspec.Struct):
    items: list[orgs.Org]


class NewGrant(msgspec.Struct, forbid_unknown_fields=True):
    user_id: str
    role: access.Role


class GrantResult(msgspec.Struct):
    user_id: str
    role: str
    org_id: str
    created: bool


class OrgsHandler(BaseHandler):
    @operation(
        "Create an organisation under a parent",
        body=NewOrg,
        permission="org.create",
        response=Created,
        status=201,
        errors=(403, 404),
        idempotent=True,
    )
    async def post(self) -> None:
        parent_id = parse_id(self.body.parent_id, "parent_id")
        await self.authorize(parent_id)
        org_id = await orgs.create_org(
            self.ctx,
            self.body.name,
            self.body.kind,
            parent_id,
            adcode=self.body.adcode,
            created_by=self.user_id,
        )
        self.reply(Created(id=str(org_id)))

    @operation("The organisations the caller may see", response=OrgList, permission="org.read")
    async def get(self) -> None:
        self.reply(OrgList(items=await orgs.describe(self.ctx, await self.scope())))


class OrgRolesHandler(BaseHandler):
    @operation(
        "Grant a role in this organisation",
        body=NewGrant,
        response=GrantResult,
        status=200,
        statuses=(201,),
        errors=(403, 404),
        permission="role.grant",
    )
    async def post(self, org_id: str) -> None:
        await self.authorize(org_id)
        user_id = parse_id(self.body.user_id, "user_id")
        await identity.get_user(self.ctx, user_id)
        created = await access.grant_role(
            self.ctx, user_id, self.body.role, parse_id(org_id), granted_by=self.user_id
        )
        self.reply(
            GrantResult(user_id=str(user_id), role=self.body.role, org_id=org_id, created=created),
            status=201 if created else 200,
        )


class Revoked(msgspec.Struct):
    user_id: str
    role: str
    org_id: str
    revoked: bool


class OrgRoleHandler(BaseHandler):
    @operation(
        "End a role held in this organisation, at once (sessions included)",
        response=Revoked,
        errors=(403, 404, 409),
        permission="role.grant",
    )
    async def delete(self, org_id: str, user_id: str, role: str) -> None:
        await self.authorize(org_id)
        revoked = await access.revoke_role(
            self.ctx, parse_id(user_id, "user_id"), role, parse_id(org_id, "org_id")
        )
        if not revoked:
            raise NotFound("该用户在此组织没有这个角色", field="role")
        self.reply(Revoked(user_id=user_id, role=role, org_id=org_id, revoked=True))


class UserAccessHandler(BaseHandler):
    @operation(
        "Disable a user (they cannot sign in, and every session of theirs ends at once), or "
        "enable them again",
        response=identity.UserAccess,
        errors=(403, 404),
        permission="user.disable",
    )
    async def post(self, user_id: str, action: str) -> None:
        await access.require_root(self.ctx, self.user_id, self.operation.permission)
        change = identity.disable_user if action == "disable" else identity.enable_user
        self.reply(await change(self.ctx, parse_id(user_id, "user_id"), by=self.user_id))


ROUTES = [
    (r"/api/v1/orgs", OrgsHandler),
    (rf"/api/v1/orgs/(?P<org_id>{ID})/roles", OrgRolesHandler),
    (
        rf"/api/v1/orgs/(?P<org_id>{ID})/roles/(?P<user_id>{ID})/(?P<role>[a-z_]{{1,32}})",
        OrgRoleHandler,
    ),
    (rf"/api/v1/users/(?P<user_id>{ID})/(?P<action>disable|enable)", UserAccessHandler),
]
