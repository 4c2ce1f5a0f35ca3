"""Who is calling: users, WeChat login, access and refresh tokens, phone binding, profiles.

Owns the `users`, `sessions` and `refresh_tokens` collections (a session is one sign-in; its
refresh tokens rotate at every refresh, and signing out ends its access tokens too). The
WeChat session_key is kept encrypted for later decryption needs and never returned or logged.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Annotated

import jwt
import msgspec
import structlog
from bson import ObjectId
from bson.errors import InvalidId
from pymongo.errors import DuplicateKeyError

from server import geo
from server.crypto import mask_phone
from server.db import in_transaction
from server.domain import access, id_documents, orgs, ratelimit
from server.domain.errors import Forbidden, InvalidRequest, NotFound, Unauthenticated, UpstreamError
from server.domain.text import ADCODE, line
from server.wechat.client import WeChatError

log = structlog.get_logger(__name__)

_ALGORITHM = "HS256"
REFRESH_GRACE_S = 30.0  # a retired refresh token still answers, for a retry on a weak signal
_AUDIENCE = "ikepu"
# Times are checked against the service clock, which the development clock may move.
_NO_TIMES = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}
# WeChat's answers for a js_code or phone code that is unknown, expired or already used.
_BAD_CODE_ERRCODES = {40029: "invalid_code", 40163: "code_used", 40226: "invalid_code"}

Tag = line(20)


class Principal(msgspec.Struct, frozen=True):
    user_id: ObjectId
    openid: str
    session_id: ObjectId | None = None  # None only for tokens the service mints for itself


class SessionCache:
    """Which sessions are live, remembered for a few seconds so that not every call reads
    `sessions`; a sign-out in this process is seen at once, in another within `ttl_s`."""

    def __init__(self, ttl_s: float = 3.0) -> None:
        self.ttl_s = ttl_s
        self._live: dict[ObjectId, float] = {}

    def fresh(self, session_id: ObjectId, now: float) -> bool:
        return self._live.get(session_id, -1.0) > now

    def remember(self, session_id: ObjectId, now: float) -> None:
        if len(self._live) > 100_000:
            self._live.clear()
        self._live[session_id] = now + self.ttl_s

    def forget(self, session_id: ObjectId) -> None:
        self._live.pop(session_id, None)


class UserSummary(msgspec.Struct):
    id: str
    roles: list[access.RoleGrant]
    phone_bound: bool


class Session(msgspec.Struct):
    token: str
    refresh_token: str
    expires_in: int
    user: UserSummary


class Profile(id_documents.Documented):
    id: str
    roles: list[access.RoleGrant]
    phone_bound: bool
    phone_masked: str | None
    real_name: str | None
    expertise: list[str]
    region_code: str | None
    region_name: str | None
    privacy_version: str | None
    admin_site_ids: list[str] = msgspec.field(default_factory=list)  # the sites they administer


class ProfileChange(id_documents.Change, forbid_unknown_fields=True, omit_defaults=True):
    real_name: line(32) | None = None
    expertise: Annotated[list[Tag], msgspec.Meta(max_length=20)] | None = None
    region_code: ADCODE | None = None
    privacy_version: line(32) | None = None


# -- tokens -----------------------------------------------------------------------------------


def _signing_key(ctx) -> bytes:
    return ctx.crypto.sign(b"access-token", "jwt")


def issue_access_token(
    ctx, user_id: ObjectId, openid: str, session_id: ObjectId | None = None
) -> tuple[str, int]:
    """An access token of a session (ended by signing out); without one, a token the service
    mints for itself (benchmarks, operators), which only expiry ends."""
    ttl = ctx.settings.access_token_ttl_s
    now = ctx.clock.now()
    claims = {
        "sub": str(user_id),
        "oid": openid,
        "aud": _AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl)).timestamp()),
    }
    if session_id is not None:
        claims["sid"] = str(session_id)
    return jwt.encode(claims, _signing_key(ctx), algorithm=_ALGORITHM), ttl


async def authenticate(ctx, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token, _signing_key(ctx), algorithms=[_ALGORITHM], audience=_AUDIENCE, options=_NO_TIMES
        )
        user_id = ObjectId(claims["sub"])
        session_id = ObjectId(claims["sid"]) if "sid" in claims else None
    except (jwt.InvalidTokenError, KeyError, InvalidId, TypeError):
        raise Unauthenticated("登录凭证无效") from None
    # Expiry is checked against the service clock, which the development clock may move.
    if claims.get("exp", 0) <= ctx.clock.time():
        raise Unauthenticated("登录已过期，请刷新或重新登录")
    if session_id is not None and not await _session_live(ctx, session_id):
        raise Unauthenticated("已退出登录，请重新登录")
    return Principal(user_id=user_id, openid=claims.get("oid", ""), session_id=session_id)


async def _session_live(ctx, session_id: ObjectId) -> bool:
    now = ctx.clock.time()
    if ctx.sessions.fresh(session_id, now):
        return True
    doc = await ctx.db["sessions"].find_one({"_id": session_id}, {"revoked_at": 1})
    if doc is None or doc["revoked_at"] is not None:
        return False
    ctx.sessions.remember(session_id, now)
    return True


async def _end_sessions(ctx, query: dict) -> int:
    """Sign sessions out: their refresh tokens and access tokens stop working at once."""
    ended = [doc["_id"] async for doc in ctx.db["sessions"].find({**query, "revoked_at": None})]
    if not ended:
        return 0
    now = ctx.clock.now()
    await ctx.db["sessions"].update_many({"_id": {"$in": ended}}, {"$set": {"revoked_at": now}})
    await ctx.db["refresh_tokens"].update_many(
        {"session_id": {"$in": ended}, "revoked_at": None}, {"$set": {"revoked_at": now}}
    )
    for session_id in ended:
        ctx.sessions.forget(session_id)
    return len(ended)


def _refresh_hash(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest()


async def _new_session(ctx, user: dict) -> Session:
    expires_at = ctx.clock.now() + timedelta(seconds=ctx.settings.refresh_token_ttl_s)
    session_id = await open_session(ctx, user["_id"], expires_at)
    refresh_token = await _new_refresh_token(ctx, user["_id"], session_id)
    return await _session(ctx, user, refresh_token, session_id)


async def _new_refresh_token(ctx, user_id: ObjectId, session_id: ObjectId) -> str:
    refresh_token = secrets.token_urlsafe(32)
    now = ctx.clock.now()
    await ctx.db["refresh_tokens"].insert_one(
        {
            "_id": _refresh_hash(refresh_token),
            "user_id": user_id,
            "session_id": session_id,
            "created_at": now,
            "expires_at": now + timedelta(seconds=ctx.settings.refresh_token_ttl_s),
            "revoked_at": None,
            "replaced_at": None,
        }
    )
    return refresh_token


async def _session(ctx, user: dict, refresh_token: str, session_id: ObjectId) -> Session:
    token, ttl = issue_access_token(ctx, user["_id"], user["openid"], session_id)
    return Session(
        token=token,
        refresh_token=refresh_token,
        expires_in=ttl,
        user=UserSummary(
            id=str(user["_id"]),
            roles=await access.roles_of(ctx, user["_id"]),
            phone_bound=bool(user.get("phone_hash")),
        ),
    )


# -- login ------------------------------------------------------------------------------------


def _wechat_failure(exc: WeChatError, what: str) -> Exception:
    log.warning("wechat_call_failed", api=exc.api, errcode=exc.errcode, timeout=exc.timeout)
    if exc.errcode in _BAD_CODE_ERRCODES:
        return InvalidRequest(
            f"{what}无效、已过期或已被使用，请重新获取",
            code=_BAD_CODE_ERRCODES[exc.errcode],
            field="code",
        )
    return UpstreamError(f"微信服务暂时不可用（{exc.errcode}），请稍后重试")


async def login(ctx, js_code: str, client_ip: str) -> Session:
    """wx.login's code → jscode2session → the user (created on first login) → a session."""
    await ratelimit.hit(ctx, f"login:ip:{client_ip}", ctx.settings.login_rate_per_ip)
    try:
        wx = await ctx.wechat.code_to_session(js_code)
    except WeChatError as exc:
        raise _wechat_failure(exc, "登录凭证") from None
    openid = wx["openid"]
    await ratelimit.hit(ctx, f"login:openid:{openid}", ctx.settings.login_rate_per_openid)
    now = ctx.clock.now()
    changes: dict = {
        "session_key": ctx.crypto.encrypt(wx["session_key"], "session_key"),
        "last_login_at": now,
    }
    if wx.get("unionid"):
        changes["unionid"] = wx["unionid"]
    user, created = await _find_or_create(ctx, openid, {**_new_user_fields(now), **changes})
    if not created:
        await ctx.db["users"].update_one({"_id": user["_id"]}, {"$set": changes})
        user |= changes
    _refuse_disabled(user)
    if openid == ctx.settings.bootstrap_admin_openid:
        await _bootstrap_admin(ctx, user["_id"])
    log.info("login", user_id=str(user["_id"]), new=created)
    session = await _new_session(ctx, user)
    # Disabled while this login ran: `disable_user` ended the sessions it found, so this one is
    # ended here (whichever of the two wrote second sees the other's write).
    current = await ctx.db["users"].find_one({"_id": user["_id"]}, {"disabled_at": 1})
    if current.get("disabled_at"):
        await _end_sessions(ctx, {"user_id": user["_id"]})
        _refuse_disabled(current)
    return session


def _refuse_disabled(user: dict) -> None:
    if user.get("disabled_at"):
        raise Forbidden("该账号已被管理员停用，如有疑问请联系管理员")


def _new_user_fields(now) -> dict:
    return {"created_at": now, "real_name": None, "expertise": [], "region_code": None}


async def _find_or_create(ctx, openid: str, new_fields: dict) -> tuple[dict, bool]:
    """The user with this openid, created with `new_fields` if there is none yet; and whether
    this call created them. A lookup on the unique openid index and an insert, rather than an
    upsert through findAndModify, which the embedded server answers by scanning `users`."""
    users = ctx.db["users"]
    user = await users.find_one({"openid": openid})
    if user is not None:
        return user, False
    user = {"_id": ObjectId(), "openid": openid, **new_fields}
    try:
        await users.insert_one(user)
    except DuplicateKeyError:  # a concurrent first login created them a moment ago
        return await users.find_one({"openid": openid}), False
    return user, True


async def import_users(ctx, people: list[tuple[str, str | None]]) -> list[ObjectId]:
    """Bulk path for data loads: users by (openid, real name), as a first login creates them."""
    now = ctx.clock.now()
    docs = [
        {"_id": ObjectId(), "openid": openid, **_new_user_fields(now), "real_name": name}
        for openid, name in people
    ]
    if docs:
        await ctx.db["users"].insert_many(docs, ordered=False)
    return [doc["_id"] for doc in docs]


async def _bootstrap_admin(ctx, user_id: ObjectId) -> None:
    root = await orgs.root_org(ctx)
    if root is None:
        root_id = await orgs.create_org(ctx, "省科学技术协会", "province", None)
    else:
        root_id = root["_id"]
    if await access.grant_role(ctx, user_id, "org_admin", root_id):
        log.info("bootstrap_admin_granted", user_id=str(user_id), org_id=str(root_id))


async def ensure_user(ctx, openid: str) -> ObjectId:
    """The user with this openid, created if they have not logged in yet (for operators)."""
    user, _ = await _find_or_create(ctx, openid, _new_user_fields(ctx.clock.now()))
    return user["_id"]


async def refresh(ctx, refresh_token: str) -> Session:
    """A new access token and a new refresh token; the one presented is retired.

    A retired refresh token presented again within `REFRESH_GRACE_S` gets the same answer (a
    retry after an answer lost on a weak connection); later, it is a stolen copy being replayed
    (reuse detection, as the OAuth 2.0 Security BCP recommends), and the whole session ends.
    """
    digest = _refresh_hash(refresh_token)
    record = await ctx.db["refresh_tokens"].find_one({"_id": digest})
    if record is None or record["revoked_at"] is not None:
        raise Unauthenticated("刷新凭证无效，请重新登录")
    if record["expires_at"] <= ctx.clock.now():
        raise Unauthenticated("刷新凭证已过期，请重新登录")
    user = await ctx.db["users"].find_one({"_id": record["user_id"]})
    if user is None:
        raise Unauthenticated("用户不存在")
    _refuse_disabled(user)
    session_id = record["session_id"]
    if record["replaced_at"] is None:
        successor = await _new_refresh_token(ctx, user["_id"], session_id)
        retired = await ctx.db["refresh_tokens"].update_one(
            {"_id": digest, "replaced_at": None, "revoked_at": None},
            {"$set": {"replaced_at": ctx.clock.now(),
                      "successor": ctx.crypto.encrypt(successor, "refresh_token")}},
        )  # fmt: skip
        if retired.matched_count:
            return await _session(ctx, user, successor, session_id)
        # Another refresh with the same token won: ours goes, theirs is the answer.
        await ctx.db["refresh_tokens"].delete_one({"_id": _refresh_hash(successor)})
        record = await ctx.db["refresh_tokens"].find_one({"_id": digest})
    if (
        record["revoked_at"] is None
        and (ctx.clock.now() - record["replaced_at"]).total_seconds() <= REFRESH_GRACE_S
    ):
        successor = ctx.crypto.decrypt(record["successor"], "refresh_token")
        return await _session(ctx, user, successor, session_id)
    log.warning("refresh_token_reused", user_id=str(user["_id"]), session_id=str(session_id))
    await _end_sessions(ctx, {"_id": session_id})
    raise Unauthenticated("刷新凭证已被使用过，为安全起见已退出登录，请重新登录")


async def logout(ctx, principal: Principal, refresh_token: str | None) -> int:
    """End the session of this refresh token, or every one of the user's when none is named;
    their access and refresh tokens stop working at once. Returns how many sessions ended."""
    if not refresh_token:
        return await _end_sessions(ctx, {"user_id": principal.user_id})
    record = await ctx.db["refresh_tokens"].find_one(
        {"_id": _refresh_hash(refresh_token), "user_id": principal.user_id}
    )
    if record is None:
        return 0
    return await _end_sessions(ctx, {"_id": record["session_id"]})


class UserAccess(msgspec.Struct):
    user_id: str
    disabled: bool
    sessions_ended: int = 0


async def disable_user(ctx, user_id: ObjectId, *, by: ObjectId | None) -> UserAccess:
    """The user can no longer sign in, and every session of theirs ends at once (in another
    process within the session cache's few seconds). Disabling twice changes nothing more; the
    province's last admin who can sign in cannot be disabled (409 ``last_admin``)."""
    await get_user(ctx, user_id)

    async def disable(session) -> None:
        newly = await ctx.db["users"].update_one(
            {"_id": user_id, "disabled_at": None},
            {"$set": {"disabled_at": ctx.clock.now(), "disabled_by": by}},
            session=session,
        )
        if newly.modified_count:
            await access.suspend_grants(ctx, user_id, session)

    await in_transaction(ctx.client, disable)
    ended = await _end_sessions(ctx, {"user_id": user_id})
    log.info("user_disabled", user_id=str(user_id), by=str(by), sessions_ended=ended)
    return UserAccess(user_id=str(user_id), disabled=True, sessions_ended=ended)


async def enable_user(ctx, user_id: ObjectId, *, by: ObjectId | None) -> UserAccess:
    """Signing in works again (ended sessions stay ended); user and grants in one transaction."""
    await get_user(ctx, user_id)

    async def enable(session) -> None:
        unset = {"$unset": {"disabled_at": "", "disabled_by": ""}}
        await ctx.db["users"].update_one({"_id": user_id}, unset, session=session)
        await access.restore_grants(ctx, user_id, session)

    await in_transaction(ctx.client, enable)
    log.info("user_enabled", user_id=str(user_id), by=str(by))
    return UserAccess(user_id=str(user_id), disabled=False)


# -- phone ------------------------------------------------------------------------------------


async def bind_phone(ctx, principal: Principal, code: str) -> str:
    try:
        answer = await ctx.wechat.get_phone_number(code)
    except WeChatError as exc:
        raise _wechat_failure(exc, "手机号授权码") from None
    info = answer.get("phone_info", answer)
    phone = info.get("purePhoneNumber") or info.get("phoneNumber")
    if not phone:
        raise UpstreamError("微信未返回手机号")
    await ctx.db["users"].update_one(
        {"_id": principal.user_id},
        {
            "$set": {
                "phone": ctx.crypto.encrypt(phone, "phone"),
                "phone_hash": ctx.crypto.lookup_hash(phone),
                "phone_masked": mask_phone(phone),
                "phone_bound_at": ctx.clock.now(),
            }
        },
    )
    return mask_phone(phone)


# -- profile ----------------------------------------------------------------------------------


async def get_user(ctx, user_id: ObjectId) -> dict:
    user = await ctx.db["users"].find_one({"_id": user_id})
    if user is None:
        raise NotFound("用户不存在", field="user_id")
    return user


async def openid_of(ctx, user_id: ObjectId) -> str:
    doc = await ctx.db["users"].find_one({"_id": user_id}, {"openid": 1})
    if doc is None:
        raise NotFound("用户不存在", field="user_id")
    return doc["openid"]


async def briefs(ctx, user_ids: list[ObjectId]) -> dict[ObjectId, dict]:
    """Name and masked phone of each user, for rosters and lists staff see."""
    cursor = ctx.db["users"].find({"_id": {"$in": user_ids}}, {"real_name": 1, "phone_masked": 1})
    return {doc.pop("_id"): doc async for doc in cursor}


async def profile(ctx, user_id: ObjectId) -> Profile:
    user = await get_user(ctx, user_id)
    region = geo.adcode_lookup(user["region_code"]) if user.get("region_code") else None
    return Profile(
        id=str(user["_id"]),
        roles=await access.roles_of(ctx, user_id),
        admin_site_ids=[str(s) for s in await access.sites_administered(ctx, user_id)],
        phone_bound=bool(user.get("phone_hash")),
        phone_masked=user.get("phone_masked"),
        real_name=user.get("real_name"),
        expertise=user.get("expertise", []),
        region_code=user.get("region_code"),
        region_name=region["name"] if region else None,
        privacy_version=user.get("privacy_version"),
        **id_documents.profile_fields(user),
    )


async def update_profile(ctx, user_id: ObjectId, change: ProfileChange) -> Profile:
    fields = msgspec.structs.asdict(change)
    fields = {k: v for k, v in fields.items() if v is not None}
    fields |= await id_documents.changes(ctx, user_id, fields)
    if "region_code" in fields and geo.adcode_lookup(fields["region_code"]) is None:
        raise InvalidRequest("region_code 不是有效的行政区划代码", field="region_code")
    if "real_name" in fields:
        fields["real_name"] = fields["real_name"].strip()
    if "expertise" in fields:
        fields["expertise"] = list(dict.fromkeys(t.strip() for t in fields["expertise"]))
    if "privacy_version" in fields:
        fields["privacy_accepted_at"] = ctx.clock.now()
    if fields:
        await ctx.db["users"].update_one({"_id": user_id}, {"$set": fields})
    return await profile(ctx, user_id)


async def open_session(ctx, user_id: ObjectId, expires_at) -> ObjectId:
    """A new sign-in: the mini-program's tokens name it, or the console's cookie does; signing
    out ends it like any."""
    doc = {"user_id": user_id, "created_at": ctx.clock.now(), "revoked_at": None}
    return (await ctx.db["sessions"].insert_one(doc | {"expires_at": expires_at})).inserted_id


session_live, end_sessions = _session_live, _end_sessions  # for the console's cookie sessions
