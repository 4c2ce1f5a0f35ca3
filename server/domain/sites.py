"""Sites: the schools, villages, communities and bases where activities and caravan visits happen.

Owns the `sites` collection. A site's admins (site_admin grants, see `access`) confirm the hours
served there.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from bson import ObjectId

from server import geo
from server.domain import access, orgs
from server.domain.errors import InvalidRequest
from server.domain.ids import fetch, parse_id
from server.domain.paging import page_by_id_any
from server.domain.text import HHMM, line

SiteKind = Literal["school", "village", "community", "base", "other"]
CoordType = Literal["wgs84", "gcj02", "bd09"]


class LocationIn(msgspec.Struct, forbid_unknown_fields=True):
    lng: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    coord_type: CoordType = "wgs84"

    def to_geojson(self) -> dict:
        try:
            return geo.wgs84_point(self.lng, self.lat, self.coord_type)
        except ValueError:  # the given point is in range (checked on decoding), not converted
            raise InvalidRequest("坐标换算为 WGS-84 后超出经纬度范围", field="location") from None


class CoordQuery(msgspec.Struct, forbid_unknown_fields=True):
    """The coordinate system a caller wants locations in (WeChat maps speak gcj02)."""

    coord_type: CoordType = "wgs84"


def location_out(location: dict | None, coord_type: str) -> dict | None:
    """A stored (WGS-84) GeoJSON point in the caller's coordinate system."""
    if location is None:
        return None
    lng, lat = geo.from_wgs84(*location["coordinates"], coord_type)
    return {"type": "Point", "coordinates": [lng, lat]}


class OpenHours(msgspec.Struct, forbid_unknown_fields=True):
    weekday: Annotated[int, msgspec.Meta(ge=1, le=7)]
    start: HHMM
    end: HHMM


class NewSite(msgspec.Struct, forbid_unknown_fields=True):
    name: line(100)
    kind: SiteKind
    org_id: str
    location: LocationIn
    address: line(200, 0) | None = None
    audience: line(100, 0) | None = None
    open_hours: Annotated[list[OpenHours], msgspec.Meta(max_length=21)] | None = None


class Site(msgspec.Struct):
    id: str
    name: str
    kind: str
    org_id: str
    location: dict
    address: str | None
    audience: str | None
    open_hours: list[OpenHours]
    admin_ids: list[str]
    coord_type: str = "wgs84"  # the system `location` is in


def minutes(hhmm: str) -> int:
    hours, mins = hhmm.split(":")
    return int(hours) * 60 + int(mins)


def _site_out(doc: dict, admins: list[ObjectId], coord_type: str = "wgs84") -> Site:
    return Site(
        id=str(doc["_id"]),
        name=doc["name"],
        kind=doc["kind"],
        org_id=str(doc["org_id"]),
        location=location_out(doc["location"], coord_type),
        address=doc.get("address"),
        audience=doc.get("audience"),
        open_hours=[OpenHours(**h) for h in doc.get("open_hours", [])],
        admin_ids=[str(u) for u in admins],
        coord_type=coord_type,
    )


class SiteChange(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The fields of a site to change, each as `NewSite` constrains it; the organisation stays."""

    name: line(100) | None = None
    kind: SiteKind | None = None
    location: LocationIn | None = None
    address: line(200, 0) | None = None
    audience: line(100, 0) | None = None
    open_hours: Annotated[list[OpenHours], msgspec.Meta(max_length=21)] | None = None


def _check_open_hours(open_hours: list[OpenHours] | None) -> None:
    for i, hours in enumerate(open_hours or []):
        if minutes(hours.start) >= minutes(hours.end):
            raise InvalidRequest("开放时间的开始须早于结束", field=f"open_hours[{i}]")


def _check_name(name: str) -> str:
    if not name.strip():
        raise InvalidRequest("站点名称不能为空", field="name")
    return name.strip()


async def create_site(ctx, new: NewSite, *, created_by: ObjectId | None = None) -> ObjectId:
    org_id = parse_id(new.org_id, "org_id")
    await orgs.get_org(ctx, org_id)
    _check_open_hours(new.open_hours)
    doc = {
        "_id": ObjectId(),
        "name": _check_name(new.name),
        "kind": new.kind,
        "org_id": org_id,
        "location": new.location.to_geojson(),
        "address": new.address,
        "audience": new.audience,
        "open_hours": [msgspec.structs.asdict(h) for h in new.open_hours or []],
        "created_by": created_by,
        "created_at": ctx.clock.now(),
    }
    await ctx.db["sites"].insert_one(doc)
    return doc["_id"]


async def update_site(ctx, site_id, change: SiteChange) -> Site:
    """Change a site's description; validated as `create_site` validates a new one."""
    doc = await get_site_doc(ctx, site_id)
    fields: dict = {}
    if change.name is not None:
        fields["name"] = _check_name(change.name)
    if change.kind is not None:
        fields["kind"] = change.kind
    if change.location is not None:
        fields["location"] = change.location.to_geojson()
    if change.open_hours is not None:
        _check_open_hours(change.open_hours)
        fields["open_hours"] = [msgspec.structs.asdict(h) for h in change.open_hours]
    for optional in ("address", "audience"):
        if (value := getattr(change, optional)) is not None:
            fields[optional] = value.strip() or None  # an empty field clears it
    if fields:
        await ctx.db["sites"].update_one({"_id": doc["_id"]}, {"$set": fields})
    return await get_site(ctx, doc["_id"])


async def get_site_doc(ctx, site_id) -> dict:
    return await fetch(ctx.db["sites"], site_id, "site_id", "站点不存在")


async def briefs(ctx, site_ids: list[ObjectId]) -> dict[ObjectId, dict]:
    """Name and organisation of each site, for reports."""
    cursor = ctx.db["sites"].find({"_id": {"$in": site_ids}}, {"name": 1, "org_id": 1})
    return {doc.pop("_id"): doc async for doc in cursor}


class SiteBrief(msgspec.Struct):
    id: str
    name: str
    kind: str
    address: str | None


async def administered_by(ctx, user_id: ObjectId) -> list[SiteBrief]:
    """The sites this user was named admin of, by name."""
    ids = await access.sites_administered(ctx, user_id)
    docs = await ctx.db["sites"].find({"_id": {"$in": ids}}).to_list(None)
    return sorted(
        (SiteBrief(id=str(d["_id"]), name=d["name"], kind=d["kind"], address=d.get("address"))
         for d in docs),
        key=lambda s: s.name,
    )  # fmt: skip


class SitePage(msgspec.Struct):
    items: list[Site]
    next_cursor: str | None


async def list_sites(
    ctx,
    org_ids: list[ObjectId],
    *,
    site_ids: list[ObjectId] = (),
    kind: str | None = None,
    name: str | None = None,
    cursor: str | None = None,
    limit: int,
    coord_type: str = "wgs84",
) -> SitePage:
    """Sites of these organisations and these sites themselves, in the order registered;
    `name` finds those whose name contains it; locations in `coord_type`."""
    query: dict = {}
    if kind is not None:
        query["kind"] = kind
    if name:
        query["name"] = {"$regex": re.escape(name.strip())}
    scopes = [{"org_id": {"$in": org_ids}}] if org_ids else []
    if site_ids:
        scopes.append({"_id": {"$in": list(site_ids)}})
    docs, following = await page_by_id_any(
        ctx.db["sites"], [{**query, **scope} for scope in scopes], cursor, limit
    )
    admins = await access.site_admins_of(ctx, [d["_id"] for d in docs])
    items = [_site_out(d, admins.get(d["_id"], []), coord_type) for d in docs]
    return SitePage(items=items, next_cursor=following)


async def get_site(ctx, site_id, coord_type: str = "wgs84") -> Site:
    doc = await get_site_doc(ctx, site_id)
    return _site_out(doc, await access.site_admins(ctx, doc["_id"]), coord_type)


async def add_admin(ctx, site_id, user_id: ObjectId, *, by: ObjectId | None = None) -> None:
    """Name someone admin of this one site: a site_admin grant narrowed to it."""
    await access.appoint_site_admin(ctx, user_id, await get_site_doc(ctx, site_id), by=by)
