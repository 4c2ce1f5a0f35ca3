"""组织与人员: the organisation tree the caller may see, who holds roles in the organisation
chosen, and granting and revoking roles (the user found by name or masked phone)."""

from __future__ import annotations

from console.handlers.staff import StaffPage
from server.domain import access, identity, orgs, people
from server.domain.errors import DomainError, Forbidden, NotFound
from server.domain.ids import parse_id
from server.web import ID

ROLE_NAMES = {
    "org_admin": "组织管理员",
    "dispatcher": "调度员",
    "team_leader": "队长",
    "site_admin": "站点管理员",
}
KIND_NAMES = {"province": "省", "city": "市", "county": "县区", "team": "队伍", "base": "基地"}


def tree_order(found: list[orgs.Org]) -> list[orgs.Org]:
    """Each organisation followed by those below it, siblings by name: the tree read top-down.
    An organisation whose parent is not visible starts a tree of its own."""
    ids = {o.id for o in found}
    children: dict[str | None, list[orgs.Org]] = {}
    for org in found:
        children.setdefault(org.parent_id if org.parent_id in ids else None, []).append(org)
    ordered: list[orgs.Org] = []

    def walk(parent: str | None) -> None:
        for org in sorted(children.get(parent, []), key=lambda o: (o.depth, o.name)):
            ordered.append(org)
            walk(org.id)

    walk(None)
    return ordered


class OrgsBase(StaffPage):
    nav = "orgs"

    async def show(self, org_id: str | None, *, error: DomainError | None = None) -> None:
        tree = tree_order(await orgs.describe(self.ctx, await self.scope("org.read")))
        if org_id is None and tree:
            org_id = tree[0].id
        chosen, holders, may_grant = None, [], False
        if org_id is not None:
            await self.require("org.read", org_id)
            chosen = (await orgs.describe(self.ctx, [parse_id(org_id, "org_id")]))[0]
            holders = await people.holders(self.ctx, parse_id(org_id, "org_id"))
            may_grant = await self.holds("role.grant") and await self.may("role.grant", org_id)
        self.set_status(400 if error else 200)
        self.render(
            "orgs.html",
            tree=tree,
            chosen=chosen,
            holders=holders,
            may_grant=may_grant,
            roles=ROLE_NAMES,
            kinds=KIND_NAMES,
            error=error,
            done=self.get_query_argument("done", ""),
        )


class OrgsPage(OrgsBase):
    async def get(self) -> None:
        await self.show(self.arg("org_id"))


class OrgPeoplePage(StaffPage):
    """The user search of the grant form (an htmx fragment)."""

    async def get(self, org_id: str) -> None:
        await self.require("role.grant", org_id)
        query = self.get_argument("q", "").strip()
        self.render(
            "orgs_people.html",
            found=await people.search(self.ctx, query),
            query=query,
            action=f"/console/orgs/{org_id}/roles",
            roles=ROLE_NAMES,
            button="授予",
        )


class OrgRolesPage(OrgsBase):
    async def post(self, org_id: str) -> None:
        """Grant: as POST /api/v1/orgs/{id}/roles."""
        await self.require("role.grant", org_id)
        try:
            user_id = parse_id(self.get_argument("user_id", ""), "user_id")
            await identity.get_user(self.ctx, user_id)
            await access.grant_role(
                self.ctx,
                user_id,
                self.get_argument("role", ""),
                parse_id(org_id, "org_id"),
                granted_by=self.staff_id,
            )
        except Forbidden:
            raise
        except DomainError as exc:
            await self.show(org_id, error=exc)
            return
        self.redirect(f"/console/orgs?org_id={org_id}&done=granted")


class OrgRolePage(OrgsBase):
    async def post(self, org_id: str, user_id: str, role: str) -> None:
        """Revoke: as DELETE /api/v1/orgs/{id}/roles/{user}/{role}; a site admin's grant
        narrowed to one site names the site."""
        await self.require("role.grant", org_id)
        site_id = self.arg("site_id")
        revoked = await access.revoke_role(
            self.ctx,
            parse_id(user_id, "user_id"),
            role,
            parse_id(org_id, "org_id"),
            site_id=parse_id(site_id, "site_id") if site_id else None,
        )
        if not revoked:
            await self.show(org_id, error=NotFound("该用户在此组织没有这个角色", field="role"))
            return
        self.redirect(f"/console/orgs?org_id={org_id}&done=revoked")


ROUTES = [
    (r"/console/orgs", OrgsPage),
    (rf"/console/orgs/(?P<org_id>{ID})/people", OrgPeoplePage),
    (rf"/console/orgs/(?P<org_id>{ID})/roles", OrgRolesPage),
    (
        rf"/console/orgs/(?P<org_id>{ID})/roles/(?P<user_id>{ID})/(?P<role>[a-z_]{{1,32}})/revoke",
        OrgRolePage,
    ),
]
