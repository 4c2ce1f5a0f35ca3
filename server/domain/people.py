"""People as staff find them: a user search for granting roles and naming site admins, and who
holds roles in an organisation.

Reads the `users` collection (server/domain/identity.py owns it) for the search, by indexed
fields only, and shows nothing of a user beyond their name and masked phone; the roles come
through `access`. Writes nothing.
"""

from __future__ import annotations

import re

import msgspec
from bson import ObjectId

from server.domain import access, identity, orgs, sites

SEARCH_LIMIT = 10
_FULL_PHONE = re.compile(r"^1\d{10}$")
_MASKED_PHONE = re.compile(r"^\d{3}\*{4}\d{4}$")


class Person(msgspec.Struct):
    id: str
    real_name: str | None
    phone_masked: str | None


class Holder(msgspec.Struct):
    """One role held in an organisation; `site_name` when narrowed to one site."""

    user_id: str
    real_name: str | None
    phone_masked: str | None
    role: str
    site_id: str | None = None
    site_name: str | None = None


async def search(ctx, text: str, *, limit: int = SEARCH_LIMIT) -> list[Person]:
    """Users by a full phone number (its lookup hash), a masked one (138****0000), or the start
    of their real name; each an equality or prefix on an index, never a scan."""
    text = text.strip()
    if not text:
        return []
    if _FULL_PHONE.match(text):
        query: dict = {"phone_hash": ctx.crypto.lookup_hash(text)}
    elif _MASKED_PHONE.match(text):
        query = {"phone_masked": text}
    else:
        query = {"real_name": {"$regex": "^" + re.escape(text)}}
    fields = {"real_name": 1, "phone_masked": 1}
    docs = await ctx.db["users"].find(query, fields).sort("_id", 1).to_list(limit)
    return [
        Person(id=str(d["_id"]), real_name=d.get("real_name"), phone_masked=d.get("phone_masked"))
        for d in docs
    ]


async def holders(ctx, org_id: ObjectId) -> list[Holder]:
    """Who holds which role in this organisation, by role then name."""
    await orgs.get_org(ctx, org_id)
    grants = await access.grants_in(ctx, org_id)
    people = await identity.briefs(ctx, sorted({g["user_id"] for g in grants}))
    site_ids = sorted({g["site_id"] for g in grants if g.get("site_id")})
    site_names = {k: v["name"] for k, v in (await sites.briefs(ctx, site_ids)).items()}
    found = [
        Holder(
            user_id=str(g["user_id"]),
            real_name=people.get(g["user_id"], {}).get("real_name"),
            phone_masked=people.get(g["user_id"], {}).get("phone_masked"),
            role=g["role"],
            site_id=str(g["site_id"]) if g.get("site_id") else None,
            site_name=site_names.get(g["site_id"]) if g.get("site_id") else None,
        )
        for g in grants
    ]
    order = {role: n for n, role in enumerate(reversed(access.ROLES))}
    return sorted(found, key=lambda h: (order[h.role], h.real_name or "", h.user_id))


async def briefs(ctx, user_ids: list[ObjectId]) -> list[Person]:
    """These users as a page lists them (a site's admins), in the order given."""
    found = await identity.briefs(ctx, user_ids)
    return [
        Person(
            id=str(u),
            real_name=found.get(u, {}).get("real_name"),
            phone_masked=found.get(u, {}).get("phone_masked"),
        )
        for u in user_ids
        if u in found
    ]
