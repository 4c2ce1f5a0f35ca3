"""Signing in to the staff console by scanning a mini-program code.

Owns `console_logins`: one document per login attempt, keyed by a hash of its nonce. It moves
pending → confirmed (a staff member scanned the code and confirmed in the mini-program) →
claimed (the browser that showed the code took its session), or pending → refused (the scanner
holds no staff role). An attempt lives two minutes; once claimed, the document keeps the
session's idle limit instead (its expiry moves forward with use). The nonce travels as the
code's scene `login:<nonce>` and, in the browser, in a signed cookie, so only the browser that
showed the code can claim it.

The console's session is a session of identity (`sessions`) that the console's cookie names:
signing out (here, or everywhere from the mini-program, or a disabled account) ends it at once;
so do losing the last staff role (checked at every request) and eight hours without use.
"""

from __future__ import annotations

import hashlib
import io
import secrets
from datetime import datetime, timedelta
from typing import Literal

import msgspec
import segno
import structlog
from bson import ObjectId

from server.domain import access, identity
from server.domain.errors import Conflict, Forbidden, InvalidRequest, NotFound
from server.wechat.client import WeChatError

log = structlog.get_logger(__name__)

LOGIN_TTL = timedelta(minutes=2)
IDLE = timedelta(hours=8)
MAX_AGE = timedelta(hours=24)  # however busy, a console session ends within a day
SCENE_PREFIX = "login:"
LOGIN_PAGE = "pages/console-login/index"  # the mini-program page that asks "登录 ikepu 管理台?"
NONCE_PATTERN = r"[A-Za-z0-9_-]{24}"
REFUSAL = "该微信账号没有工作人员角色，不能登录管理台；请联系所在组织的管理员授予角色"


class Attempt(msgspec.Struct):
    nonce: str
    scene: str
    expires_at: datetime


class Claim(msgspec.Struct):
    status: Literal["pending", "signed_in", "refused", "expired"]
    session_id: ObjectId | None = None


def _key(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


async def begin(ctx) -> Attempt:
    """A new login attempt: the nonce (18 random bytes, 24 characters; with the prefix the
    scene stays within WeChat's 32) the login page shows as a code."""
    nonce = secrets.token_urlsafe(18)
    now = ctx.clock.now()
    expires_at = now + LOGIN_TTL
    await ctx.db["console_logins"].insert_one(
        {"_id": _key(nonce), "status": "pending", "created_at": now, "expires_at": expires_at}
    )
    return Attempt(nonce=nonce, scene=SCENE_PREFIX + nonce, expires_at=expires_at)


async def _live(ctx, nonce: str) -> dict | None:
    doc = await ctx.db["console_logins"].find_one({"_id": _key(nonce)})
    if doc is None or doc["expires_at"] <= ctx.clock.now():
        return None
    return doc


async def code_png(ctx, nonce: str) -> bytes:
    """The mini-program code to scan; a plain QR code of the scene if WeChat can't make one."""
    if await _live(ctx, nonce) is None:
        raise NotFound("登录二维码已过期，请刷新页面")
    scene = SCENE_PREFIX + nonce
    try:
        return await ctx.wechat.get_wxacode_unlimited(scene, page=LOGIN_PAGE)
    except WeChatError as exc:
        log.warning("wxacode_fallback_to_qr", errcode=exc.errcode)
        return await ctx.run_blocking(_qr_png, scene)


def _qr_png(scene: str) -> bytes:
    out = io.BytesIO()
    segno.make(f"ikepu:{scene}", error="m").save(out, kind="png", scale=6)
    return out.getvalue()


async def is_staff(ctx, user_id: ObjectId) -> bool:
    return any(g["role"] in access.STAFF_ROLES for g in await access.grants_of(ctx, user_id))


async def confirm(ctx, user_id: ObjectId, nonce: str) -> None:
    """The scanner confirms in the mini-program. Only staff may: anyone else is refused, and
    the waiting login page says so."""
    doc = await _live(ctx, nonce)
    if doc is None:
        raise NotFound("登录二维码已过期，请在管理台刷新后重新扫码", field="nonce")
    if not await is_staff(ctx, user_id):
        await ctx.db["console_logins"].update_one(
            {"_id": doc["_id"], "status": "pending"}, {"$set": {"status": "refused"}}
        )
        raise Forbidden(REFUSAL)
    # A code another account was refused on may still be scanned by a staff member.
    confirmed = await ctx.db["console_logins"].update_one(
        {"_id": doc["_id"], "status": {"$in": ["pending", "refused"]}},
        {"$set": {"status": "confirmed", "user_id": user_id, "confirmed_at": ctx.clock.now()}},
    )
    if not confirmed.matched_count:
        raise Conflict("该登录二维码已被使用，请在管理台刷新后重新扫码", code="login_used")
    log.info("console_login_confirmed", user_id=str(user_id))


async def claim(ctx, nonce: str) -> Claim:
    """What the login page's poll learns: still waiting, refused, expired, or signed in (once:
    the first poll after the confirmation gets the session)."""
    doc = await _live(ctx, nonce)
    if doc is None:
        return Claim(status="expired")
    if doc["status"] == "refused":
        return Claim(status="refused")
    if doc["status"] != "confirmed":
        return Claim(status="pending")
    taken = await ctx.db["console_logins"].update_one(
        {"_id": doc["_id"], "status": "confirmed"}, {"$set": {"status": "claimed"}}
    )
    if not taken.modified_count:
        return Claim(status="pending")  # a concurrent poll of the same page took it
    session_id = await identity.open_session(ctx, doc["user_id"], ctx.clock.now() + MAX_AGE)
    await ctx.db["console_logins"].update_one(
        {"_id": doc["_id"]},
        {"$set": {"session_id": session_id, "expires_at": ctx.clock.now() + IDLE}},
    )
    return Claim(status="signed_in", session_id=session_id)


async def development_scan(ctx, nonce: str, openid: str) -> Claim:
    """What scanning and confirming would do, as this openid (emulator only: never with a real
    appid)."""
    if not ctx.settings.uses_wechat_emulator:
        raise NotFound("资源不存在")
    if not openid:
        raise InvalidRequest("请输入 openid", field="openid")
    user_id = await identity.ensure_user(ctx, openid)
    await confirm(ctx, user_id, nonce)
    return await claim(ctx, nonce)


async def staff_user(ctx, session_id: ObjectId) -> ObjectId | None:
    """The staff member a console session belongs to, its idle time starting again; None when
    it has ended. A session idle too long, or whose user holds no staff role any more, ends
    here."""
    doc = await ctx.db["console_logins"].find_one({"session_id": session_id})
    if doc is None or not await identity.session_live(ctx, session_id):
        return None
    now = ctx.clock.now()
    if doc["expires_at"] <= now or not await is_staff(ctx, doc["user_id"]):
        await sign_out(ctx, session_id)
        return None
    # Written at most once a minute: a page's every request need not write.
    if now + IDLE - doc["expires_at"] > timedelta(minutes=1):
        await ctx.db["console_logins"].update_one(
            {"_id": doc["_id"]}, {"$set": {"expires_at": now + IDLE}}
        )
    return doc["user_id"]


async def sign_out(ctx, session_id: ObjectId) -> None:
    await identity.end_sessions(ctx, {"_id": session_id})
    await ctx.db["console_logins"].delete_one({"session_id": session_id})
