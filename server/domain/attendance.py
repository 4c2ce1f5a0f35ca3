"""Attendance: check-in codes, check-in and check-out on site, and the hours they earn.

Owns the `attendance` collection. What a check-in must show is the activity's policy
(`activities.checkin_policy`): the code displayed on site (a signed scene bound to the activity,
which expires), being within its radius, or both. Hours go to the ledger
(server/domain/hours.py) as a pending credit at check-out; a forgotten check-out is closed at the
activity's end and flagged.
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
from datetime import datetime, timedelta

import msgspec
import segno
import structlog
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from server import geo
from server.domain import access, activities, hours, signups, sites
from server.domain.errors import Conflict, InvalidRequest, OutOfRange
from server.domain.ids import parse_id
from server.domain.sites import LocationIn
from server.wechat.client import WeChatError

log = structlog.get_logger(__name__)

CHECKIN_PAGE = "pages/checkin/index"
_SCENE_PURPOSE = "checkin-scene"


class CheckinCode(msgspec.Struct):
    scene: str
    expires_at: datetime
    png_url: str


class CheckinRequest(msgspec.Struct, forbid_unknown_fields=True):
    location: LocationIn
    scene: str | None = None


class CheckoutRequest(msgspec.Struct, forbid_unknown_fields=True):
    location: LocationIn


class CheckedIn(msgspec.Struct):
    checked_in_at: datetime


class CheckedOut(msgspec.Struct):
    record_id: str | None
    hours: float
    status: str  # pending: credited and waiting for the site; not_credited: too little time


# -- check-in codes ---------------------------------------------------------------------------


def make_scene(ctx, activity_id: ObjectId, expires_at: datetime) -> str:
    """12 bytes of id, 4 of expiry, 8 of HMAC: 32 base64url characters, WeChat's scene limit."""
    body = activity_id.binary + struct.pack(">I", int(expires_at.timestamp()))
    signature = ctx.crypto.sign(body, _SCENE_PURPOSE, length=8)
    return base64.urlsafe_b64encode(body + signature).decode()


def read_scene(ctx, scene: str) -> tuple[ObjectId, datetime]:
    try:
        raw = base64.urlsafe_b64decode(scene.encode())
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 24 or not ctx.crypto.verify(raw[:16], raw[16:], _SCENE_PURPOSE):
        raise InvalidRequest("签到码无效", code="invalid_scene", field="scene")
    (expires,) = struct.unpack(">I", raw[12:16])
    expires_at = datetime.fromtimestamp(expires, ctx.clock.now().tzinfo)
    if expires_at <= ctx.clock.now():
        raise InvalidRequest("签到码已过期，请让组织者刷新", code="invalid_scene", field="scene")
    return ObjectId(raw[:12]), expires_at


async def checkin_code(ctx, activity_id, *, by: ObjectId | None = None) -> CheckinCode:
    """A fresh code to show on site, for the activity's organisers and its site's admins."""
    doc = await activities.get_doc(ctx, activity_id)
    if by is not None and not (
        doc.get("site_id")
        and await access.may(
            ctx, by, "checkin.show", site=await sites.get_site_doc(ctx, doc["site_id"])
        )
    ):
        await access.require(ctx, by, "checkin.show", org_id=doc["org_id"])
    expires_at = min(
        ctx.clock.now() + timedelta(seconds=ctx.settings.checkin_code_ttl_s),
        doc["ends_at"] + timedelta(minutes=ctx.settings.checkout_late_min),
    )
    scene = make_scene(ctx, doc["_id"], expires_at)
    return CheckinCode(scene=scene, expires_at=expires_at, png_url=f"/checkin-codes/{scene}.png")


async def checkin_code_png(ctx, scene: str) -> bytes:
    """The mini-program code for a scene; a plain QR code of it if WeChat can't make one."""
    read_scene(ctx, scene)
    try:
        return await ctx.wechat.get_wxacode_unlimited(scene, page=CHECKIN_PAGE)
    except WeChatError as exc:
        log.warning("wxacode_fallback_to_qr", errcode=exc.errcode)
        return await ctx.run_blocking(_qr_png, scene)


def _qr_png(scene: str) -> bytes:
    out = io.BytesIO()
    segno.make(f"ikepu:checkin:{scene}", error="m").save(out, kind="png", scale=8)
    return out.getvalue()


# -- check-in and check-out -------------------------------------------------------------------


def _distance_check(doc: dict, location: LocationIn) -> dict:
    point = location.to_geojson()
    if doc.get("location") is None or "location" not in activities.checkin_policy(doc):
        return point  # no place to check against (an online activity), or none asked for
    metres = geo.distance_m(point["coordinates"], doc["location"]["coordinates"])
    radius = doc.get("checkin_radius_m", activities.DEFAULT_CHECKIN_RADIUS_M)
    if metres > radius:
        raise OutOfRange(f"距离活动地点 {metres:.0f} 米，超出 {radius} 米签到范围")
    return point


async def check_in(ctx, user_id: ObjectId, activity_id, request: CheckinRequest) -> CheckedIn:
    activity_id = parse_id(activity_id, "activity_id")
    doc = await activities.get_doc(ctx, activity_id)
    if request.scene is None and "code" in activities.checkin_policy(doc):
        raise InvalidRequest("请扫描活动现场的签到码", code="invalid_scene", field="scene")
    if request.scene is not None and read_scene(ctx, request.scene)[0] != activity_id:
        raise InvalidRequest("签到码不属于该活动", code="invalid_scene", field="scene")
    existing = await ctx.db["attendance"].find_one({"activity_id": activity_id, "user_id": user_id})
    if existing is not None:
        return CheckedIn(checked_in_at=existing["checked_in_at"])  # a retry, not a second one
    if not await signups.is_confirmed(ctx, activity_id, user_id):
        raise Conflict("您未确认报名该活动", code="not_signed_up")
    now = ctx.clock.now()
    if doc["status"] == "cancelled":
        raise Conflict("活动已取消", code="activity_cancelled")
    opens = doc["starts_at"] - timedelta(minutes=ctx.settings.checkin_early_min)
    if not opens <= now < doc["ends_at"]:
        raise Conflict("不在签到时间内", code="checkin_closed")
    point = _distance_check(doc, request.location)
    try:
        await ctx.db["attendance"].insert_one(
            {
                "activity_id": activity_id,
                "user_id": user_id,
                "org_id": doc["org_id"],
                "site_id": doc.get("site_id"),
                "starts_at": doc["starts_at"],
                "ends_at": doc["ends_at"],
                "checked_in_at": now,
                "checkin_location": point,
                "status": "open",
            }
        )
    except DuplicateKeyError:
        existing = await ctx.db["attendance"].find_one(
            {"activity_id": activity_id, "user_id": user_id}
        )
        return CheckedIn(checked_in_at=existing["checked_in_at"])
    return CheckedIn(checked_in_at=now)


def service_hours(ctx, start: datetime, end: datetime, checked_in: datetime, out: datetime):
    """(hours credited, coverage): time inside the activity's window, rounded to the step."""
    served = (min(out, end) - max(checked_in, start)).total_seconds()
    window = (end - start).total_seconds()
    coverage = max(0.0, served) / window if window > 0 else 0.0
    if coverage < ctx.settings.min_coverage:
        return 0.0, coverage
    step = ctx.settings.hours_rounding
    return round(served / 3600 / step) * step, coverage


async def check_out(ctx, user_id: ObjectId, activity_id, request: CheckoutRequest) -> CheckedOut:
    activity_id = parse_id(activity_id, "activity_id")
    doc = await activities.get_doc(ctx, activity_id)
    record = await ctx.db["attendance"].find_one({"activity_id": activity_id, "user_id": user_id})
    if record is None:
        raise Conflict("尚未签到", code="not_checked_in")
    if record["status"] != "open":
        return _checked_out(record)  # a retry returns the first answer
    now = ctx.clock.now()
    if now > doc["ends_at"] + timedelta(minutes=ctx.settings.checkout_late_min):
        raise Conflict("已超过签退时间，将由站点核实时长", code="checkout_closed")
    point = _distance_check(doc, request.location)
    return await _close(ctx, record, doc, now, point, status="closed")


async def _close(ctx, record: dict, doc: dict, out: datetime, point, *, status: str):
    credited, coverage = service_hours(
        ctx, doc["starts_at"], doc["ends_at"], record["checked_in_at"], out
    )
    credit_id = None
    if credited > 0 and doc["status"] != "cancelled":
        credit_id = await hours.credit(
            ctx,
            user_id=record["user_id"],
            hours=credited,
            org_id=doc["org_id"],
            site_id=doc.get("site_id"),
            activity_id=doc["_id"],
            source="caravan" if activities.CARAVAN_TAG in doc.get("tags", []) else "activity",
            served_at=doc["starts_at"],
            basis={"checked_in_at": record["checked_in_at"], "checked_out_at": out},
        )
    closing = {
        "status": status,
        "checked_out_at": out,
        "checkout_location": point,
        "hours": credited,
        "coverage": round(coverage, 3),
        "credit_id": credit_id,
        "flagged": status == "auto_closed",
    }
    # Compare-and-set on the open record by `_id` (a findAndModify would scan the collection
    # on the embedded server): whoever closes it first gives the answer every retry returns.
    closed = await ctx.db["attendance"].update_one(
        {"_id": record["_id"], "status": "open"}, {"$set": closing}
    )
    if closed.matched_count:
        return _checked_out(closing)
    return _checked_out(await ctx.db["attendance"].find_one({"_id": record["_id"]}))


def _checked_out(record: dict) -> CheckedOut:
    credit_id = record.get("credit_id")
    return CheckedOut(
        record_id=str(credit_id) if credit_id else None,
        hours=record.get("hours", 0.0),
        status="pending" if credit_id else "not_credited",
    )


async def attended_credits(ctx, activity_id: ObjectId) -> list[ObjectId]:
    """The hours credits of those who checked in to an activity that has ended, closing a
    forgotten check-out first (as the daily job would): what a site confirms for a caravan
    visit's crew, by attendance rather than by the crew list."""
    doc = await activities.get_doc(ctx, activity_id)
    if ctx.clock.now() < doc["ends_at"]:
        raise Conflict("活动尚未结束，无法确认时长", code="activity_not_finished")
    credit_ids = []
    async for record in ctx.db["attendance"].find({"activity_id": activity_id}):
        credit_id = record.get("credit_id")
        if record["status"] == "open":
            closed = await _close(ctx, record, doc, doc["ends_at"], None, status="auto_closed")
            credit_id = ObjectId(closed.record_id) if closed.record_id else None
        if credit_id:
            credit_ids.append(credit_id)
    return credit_ids


async def close_forgotten(ctx) -> int:
    """Close check-ins whose activity ended past the check-out window: at the activity's end,
    flagged for the site to review. Run by a daily job."""
    cutoff = ctx.clock.now() - timedelta(minutes=ctx.settings.checkout_late_min)
    closed = 0
    async for record in ctx.db["attendance"].find({"status": "open", "ends_at": {"$lt": cutoff}}):
        doc = await activities.get_doc(ctx, record["activity_id"])
        await _close(ctx, record, doc, doc["ends_at"], None, status="auto_closed")
        closed += 1
    return closed
