"""Who may do what: the one table of permissions, the roles people hold, and the checks.

Owns the `role_grants` collection.

A role holds within one organisation and its subtree. A site admin is one thing: a `site_admin`
grant, either over an organisation's subtree (every site in it) or narrowed to one site
(`site_id`, what `POST /api/v1/sites/{id}/admins` gives). Grants are read at every check, so a
revoked role ends at once, sessions included.

Every staff operation names one permission below; the web layer refuses a caller who holds it
nowhere before the domain is called, and the scope of each organisation, site or reference an
operation touches is checked here with `require`. Nothing else names roles.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import msgspec
import structlog
from bson import ObjectId
from pymongo.errors import DuplicateKeyError, OperationFailure

from server.db import in_transaction
from server.domain import orgs
from server.domain.errors import Conflict, Forbidden, InvalidRequest
from server.domain.ids import parse_id

log = structlog.get_logger(__name__)

Role = Literal["volunteer", "team_leader", "site_admin", "dispatcher", "org_admin"]
ROLES: tuple[str, ...] = ("volunteer", "team_leader", "site_admin", "dispatcher", "org_admin")
STAFF_ROLES: frozenset[str] = frozenset(ROLES) - {"volunteer"}

_ORGANISERS = frozenset({"org_admin", "dispatcher", "team_leader"})
_DISPATCH = frozenset({"org_admin", "dispatcher"})
_SITE_STAFF = _ORGANISERS | {"site_admin"}

PERMISSIONS: dict[str, frozenset[str]] = {
    # Organisations and people.
    "org.read": frozenset(ROLES),  # what each sees is their subtrees (nothing for a volunteer)
    "org.create": frozenset({"org_admin"}),
    "role.grant": frozenset({"org_admin"}),
    # A user belongs to no one organisation: disabling them ends their access everywhere, so it
    # is the province's (checked at the root organisation).
    "user.disable": frozenset({"org_admin"}),
    "site.register": _DISPATCH,
    "site.read": _SITE_STAFF,
    "site.appoint": frozenset({"org_admin"}),
    # i科普 activities and hours.
    "activity.organise": _ORGANISERS,
    "checkin.show": _SITE_STAFF,  # the code shown on site: its admin shows it as well
    "hours.read": _SITE_STAFF,
    "hours.confirm": _SITE_STAFF,
    "stats.read": _ORGANISERS,
    # Service records in the national systems' forms. Organisers prepare and check them with
    # ID numbers masked; the numbers themselves go out only with the admin who submits them
    # (every export is logged, and that log is theirs to read).
    "records.export": _ORGANISERS,
    "records.export_identity": frozenset({"org_admin"}),
    # 科普大篷车.
    "fleet.manage": _DISPATCH,
    "visit.request": _DISPATCH | {"site_admin"},
    "visit.read": _DISPATCH | {"site_admin"},
    "visit.confirm": frozenset({"org_admin", "site_admin"}),
    "plan.dispatch": _DISPATCH,
    "trip.log": _DISPATCH,
    # A caravan's year target comes from the association, not from those it measures.
    "target.set": frozenset({"org_admin"}),
    # The province's reminder outbox (checked at the root organisation).
    "outbox.manage": frozenset({"org_admin"}),
    # 百名首席科普专家进百县: a county's staff ask for an expert; the association registers the
    # experts, matches them to requests and publishes (both checked at the root organisation).
    "expert.request": _DISPATCH,
    "expert.manage": frozenset({"org_admin"}),
    "expert.match": frozenset({"org_admin"}),
}


def roles_holding(permission: str) -> frozenset[str]:
    return PERMISSIONS[permission]


class RoleGrant(msgspec.Struct, frozen=True, omit_defaults=True):
    role: str
    org_id: str | None
    site_id: str | None = None


# -- grants -----------------------------------------------------------------------------------


async def grant_role(
    ctx,
    user_id: ObjectId,
    role: str,
    org_id: ObjectId,
    *,
    site_id: ObjectId | None = None,
    granted_by: ObjectId | None = None,
) -> bool:
    """True when the grant is new; granting what someone already holds changes nothing."""
    if role not in STAFF_ROLES:
        raise InvalidRequest("只能授予工作人员角色（volunteer 人人都有）", field="role")
    if site_id is not None and role != "site_admin":
        raise InvalidRequest("只有站点管理员可以限定到一个站点", field="role")
    await orgs.get_org(ctx, org_id)
    try:
        await ctx.db["role_grants"].insert_one(
            {
                "user_id": user_id,
                "role": role,
                "org_id": org_id,
                "site_id": site_id,
                "granted_by": granted_by,
                "granted_at": ctx.clock.now(),
            }
        )
    except DuplicateKeyError:
        return False
    return True


async def revoke_role(
    ctx, user_id: ObjectId, role: str, org_id: ObjectId, *, site_id: ObjectId | None = None
) -> bool:
    """True when the grant was held. The root organisation keeps an org_admin who can sign in:
    revoking its last one is refused (409 ``last_admin``), since no one could then grant a role
    again."""
    grant = {"user_id": user_id, "role": role, "org_id": org_id, "site_id": site_id}
    root = await orgs.root_org(ctx)
    if role != "org_admin" or root is None or org_id != root["_id"]:
        return (await ctx.db["role_grants"].delete_one(grant)).deleted_count == 1

    async def revoke(session) -> bool:
        deleted = await ctx.db["role_grants"].delete_one(grant, session=session)
        if deleted.deleted_count == 0:
            return False
        await _keep_a_root_admin(ctx, root["_id"], session)
        return True

    return await in_transaction(ctx.client, revoke)


async def suspend_grants(ctx, user_id: ObjectId, session) -> None:
    """In the transaction disabling the user: their grants are held by someone who cannot sign
    in, which the root's last admin may not be (409 ``last_admin``)."""
    await ctx.db["role_grants"].update_many(
        {"user_id": user_id}, {"$set": {"suspended": True}}, session=session
    )
    root = await orgs.root_org(ctx)
    if root is None:
        return
    held = {"user_id": user_id, "role": "org_admin", "org_id": root["_id"], "site_id": None}
    if await ctx.db["role_grants"].find_one(held, {"_id": 1}, session=session):
        await _keep_a_root_admin(ctx, root["_id"], session)


async def restore_grants(ctx, user_id: ObjectId, session) -> None:
    """In the transaction enabling the user: they can sign in again, so their grants count."""
    await ctx.db["role_grants"].update_many(
        {"user_id": user_id}, {"$unset": {"suspended": ""}}, session=session
    )


async def _keep_a_root_admin(ctx, root_id: ObjectId, session) -> None:
    """Refuses (409 ``last_admin``, the transaction aborted) when, after this transaction's own
    change (a grant deleted, or suspended), no root admin who can sign in is left. It rewrites
    the grants it counts, so two transactions that each leave the other as the last admin
    (revoking or disabling each other at once) conflict, and the one retried sees the other's
    change."""
    grants = ctx.db["role_grants"].find(
        {"role": "org_admin", "org_id": root_id, "site_id": None}, session=session
    )
    able = [g["_id"] async for g in grants if not g.get("suspended")]
    left = await ctx.db["role_grants"].update_many(
        {"_id": {"$in": able}}, {"$set": {"checked_at": ctx.clock.now()}}, session=session
    )
    if left.matched_count == 0:
        raise Conflict(
            "这是省级组织的最后一位能登录的管理员，撤销或停用后将无人能授予角色；请先授予另一位",
            code="last_admin",
        )


async def grants_of(ctx, user_id: ObjectId) -> list[dict]:
    return await ctx.db["role_grants"].find({"user_id": user_id}).to_list(None)


async def grants_in(ctx, org_id: ObjectId) -> list[dict]:
    """The roles held in this one organisation (not its subtree), site-narrowed ones included."""
    return await ctx.db["role_grants"].find({"org_id": org_id}).to_list(None)


async def roles_of(ctx, user_id: ObjectId) -> list[RoleGrant]:
    """Every user is a volunteer; staff roles hold within an organisation (or one site)."""
    grants = await grants_of(ctx, user_id)
    staff = sorted(
        (
            RoleGrant(
                role=g["role"],
                org_id=str(g["org_id"]),
                site_id=str(g["site_id"]) if g.get("site_id") else None,
            )
            for g in grants
        ),
        key=lambda g: (g.role, g.org_id or "", g.site_id or ""),
    )
    return [RoleGrant(role="volunteer", org_id=None), *staff]


async def appoint_site_admin(
    ctx, user_id: ObjectId, site: dict, *, by: ObjectId | None = None
) -> bool:
    """Name someone admin of this one site: a site_admin grant narrowed to it."""
    return await grant_role(
        ctx, user_id, "site_admin", site["org_id"], site_id=site["_id"], granted_by=by
    )


async def site_admins(ctx, site_id: ObjectId) -> list[ObjectId]:
    """The people named admin of this one site (those told of its visits and hours)."""
    cursor = ctx.db["role_grants"].find({"site_id": site_id, "role": "site_admin"}, {"user_id": 1})
    return sorted({doc["user_id"] async for doc in cursor})


async def site_admins_of(ctx, site_ids: list[ObjectId]) -> dict[ObjectId, list[ObjectId]]:
    """`site_admins` of many sites in one query (a page of a list)."""
    found: dict[ObjectId, set[ObjectId]] = {}
    cursor = ctx.db["role_grants"].find(
        {"site_id": {"$in": site_ids}, "role": "site_admin"}, {"user_id": 1, "site_id": 1}
    )
    async for doc in cursor:
        found.setdefault(doc["site_id"], set()).add(doc["user_id"])
    return {site: sorted(users) for site, users in found.items()}


async def sites_administered(ctx, user_id: ObjectId) -> list[ObjectId]:
    """The sites this user was named admin of."""
    grants = await grants_of(ctx, user_id)
    return sorted({g["site_id"] for g in grants if g.get("site_id")})


# -- checks -----------------------------------------------------------------------------------


def _holding(grants: list[dict], permission: str) -> list[dict]:
    roles = PERMISSIONS[permission]
    return [g for g in grants if g["role"] in roles]


async def holds_anywhere(ctx, user_id: ObjectId, permission: str) -> bool:
    """Whether the user holds the permission in some organisation or site: what the web layer
    checks before calling the domain."""
    if "volunteer" in PERMISSIONS[permission]:
        return True
    return bool(_holding(await grants_of(ctx, user_id), permission))


async def may(
    ctx, user_id: ObjectId, permission: str, *, org_id=None, site: dict | None = None
) -> bool:
    """Whether the user may do `permission` on this organisation (its subtree's grants from
    above) or on this site (the same, plus a grant narrowed to the site)."""
    if site is not None:
        org_id = site["org_id"]
    if org_id is None:
        raise ValueError("a check needs an organisation or a site")
    grants = _holding(await grants_of(ctx, user_id), permission)
    if not grants:
        return False
    above = set(await orgs.lineage(ctx, parse_id(org_id, "org_id")))
    for grant in grants:
        narrowed = grant.get("site_id")
        if narrowed is None and grant["org_id"] in above:
            return True
        if narrowed is not None and site is not None and narrowed == site["_id"]:
            return True
    return False


async def require(
    ctx,
    user_id: ObjectId | None,
    permission: str,
    *,
    org_id=None,
    site: dict | None = None,
    field: str | None = None,
) -> None:
    """Refuses with 403 unless the user may do `permission` there. `user_id` None is the
    service itself (seeding, the demo, jobs): trusted. `field` names the reference in a body
    that lies outside the caller's scope."""
    if user_id is None:
        return
    if not await may(ctx, user_id, permission, org_id=org_id, site=site):
        where = f"（{field}）" if field else ""
        raise Forbidden(f"没有在该组织执行此操作的权限{where}", field=field)


async def require_each(
    ctx, user_id: ObjectId | None, permission: str, docs: list[dict], field: str
) -> None:
    """Every referenced document (each with its `org_id`) lies where the user may do
    `permission`: a body cannot reach into another organisation's records."""
    for org_id in sorted({doc["org_id"] for doc in docs}):
        await require(ctx, user_id, permission, org_id=org_id, field=field)


async def require_root(ctx, user_id: ObjectId, permission: str) -> None:
    """For what belongs to the whole province: held at the root organisation."""
    root = await orgs.root_org(ctx)
    if root is None:
        raise Forbidden("没有权限")
    await require(ctx, user_id, permission, org_id=root["_id"])


async def scope(ctx, user_id: ObjectId, permission: str) -> list[ObjectId]:
    """The organisations whose records a list shows the user: every subtree in which they hold
    the permission, the same rule as `may` seen from above."""
    grants = _holding(await grants_of(ctx, user_id), permission)
    tops = sorted({g["org_id"] for g in grants if g.get("site_id") is None})
    return await orgs.subtrees(ctx, tops)


async def site_scope(ctx, user_id: ObjectId, permission: str) -> list[ObjectId]:
    """The sites a list shows the user beyond `scope`: those whose admin they were named."""
    grants = _holding(await grants_of(ctx, user_id), permission)
    return sorted({g["site_id"] for g in grants if g.get("site_id")})


# -- one representation of a site admin -------------------------------------------------------


async def migrate(ctx) -> None:
    """Site admins named on the site itself (`sites.admin_ids`, the first representation)
    become grants narrowed to the site; the old unique index on grants, which could not tell
    two sites' grants apart, goes."""
    with contextlib.suppress(OperationFailure):  # already gone, or never made
        await ctx.db["role_grants"].drop_index("user_id_1_role_1_org_id_1")
    moved = 0
    async for site in ctx.db["sites"].find({"admin_ids": {"$exists": True}}):
        for user_id in site.get("admin_ids", []):
            moved += await grant_role(
                ctx, user_id, "site_admin", site["org_id"], site_id=site["_id"]
            )
        await ctx.db["sites"].update_one({"_id": site["_id"]}, {"$unset": {"admin_ids": ""}})
    if moved:
        log.info("site_admins_migrated", grants=moved)
