"""The base of every JSON handler: request ids, body and query validation from the endpoint's
models, authentication, idempotent retries, the error envelope, and request metrics."""

from __future__ import annotations

import functools
import ipaddress
import re
import time
import typing
import uuid
from datetime import date, datetime
from http import HTTPStatus
from typing import Any

import msgspec
import structlog
import tornado.web
from bson import ObjectId
from prometheus_client import Counter, Histogram
from pymongo.errors import ConnectionFailure, PyMongoError

from server.context import Context
from server.domain import access, idempotency, identity, orgs, text
from server.domain.errors import DomainError, Forbidden, InvalidRequest, Unauthenticated
from server.domain.ids import parse_id
from server.web.operation import Operation

log = structlog.get_logger("ikepu.http")

STATUS_OF_KIND = {
    "invalid": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "unprocessable": 422,
    "rate_limited": 429,
    "upstream": 502,
    "unavailable": 503,
}
CODE_OF_STATUS = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "out_of_range",
    429: "rate_limited",
    502: "wechat_error",
    503: "unavailable",
}
MESSAGE_OF_STATUS = {
    400: "请求格式不正确",
    404: "资源不存在",
    405: "不支持该请求方法",
    500: "服务器内部错误",
    503: "服务暂不可用，请稍后重试",
}

_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]+)`")
# msgspec quotes the pattern a string broke; free text's patterns are told in words.
_TEXT_REASONS = {
    f"Expected `str` matching regex {pattern!r}": message
    for pattern, message in text.MESSAGES.items()
}

REQUESTS = Counter(
    "ikepu_http_requests_total", "HTTP requests by route and status", ["route", "method", "status"]
)
LATENCY = Histogram(
    "ikepu_http_request_duration_seconds",
    "HTTP request latency by route",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def _encode_extra(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_encode_extra)


def encode_json(value: Any) -> bytes:
    return _encoder.encode(value)


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    field: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


class BaseHandler(tornado.web.RequestHandler):
    ctx: Context
    route: str

    def initialize(self, ctx: Context, route: str = "unmatched") -> None:
        self.ctx = ctx
        self.route = route
        self.body: Any = None
        self.query: Any = None
        self.principal: identity.Principal | None = None
        self._idempotency: idempotency.Claim | None = None
        self._started = time.perf_counter()
        self.request_id = self.request.headers.get("X-Request-Id") or uuid.uuid4().hex
        self.set_default_headers()
        ctx.in_flight.enter()

    def set_default_headers(self) -> None:
        # Called again whenever an error clears the headers, so the id survives into errors.
        if request_id := getattr(self, "request_id", None):
            self.set_header("X-Request-Id", request_id)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def operation(self) -> Operation | None:
        method = getattr(self, self.request.method.lower(), None)
        return getattr(method, "operation", None)

    async def prepare(self) -> None:
        structlog.contextvars.bind_contextvars(request_id=self.request_id)
        op = self.operation
        if op is None:
            return
        await self._authenticate(required=op.auth)
        if op.permission is not None and not await access.holds_anywhere(
            self.ctx, self.user_id, op.permission
        ):
            raise Forbidden("没有执行此操作的权限")
        if op.query is not None:
            self.query = self._parse_query(op.query)
        if op.body is not None:
            self.body = self._parse_body(op.body)
        if op.idempotent:
            await self._begin_idempotent()

    def on_finish(self) -> None:
        self.ctx.in_flight.leave()
        status = self.get_status()
        elapsed = time.perf_counter() - self._started
        REQUESTS.labels(self.route, self.request.method, str(status)).inc()
        LATENCY.labels(self.route, self.request.method).observe(elapsed)
        log.info(
            "request",
            method=self.request.method,
            route=self.route,
            status=status,
            ms=round(elapsed * 1000, 2),
        )
        structlog.contextvars.unbind_contextvars("request_id")

    # -- input -------------------------------------------------------------------------------

    def _parse_body(self, model: type) -> Any:
        raw = self.request.body or b"{}"
        try:
            return msgspec.json.decode(raw, type=model)
        except msgspec.ValidationError as exc:
            raise validation_error(exc, "body") from None
        except msgspec.DecodeError:
            raise InvalidRequest("请求体不是有效的 JSON") from None

    def _parse_query(self, model: type) -> Any:
        fields = {f.encode_name: f for f in msgspec.structs.fields(model)}
        values: dict[str, Any] = {}
        for name, raw in self.request.query_arguments.items():
            if name not in fields:
                raise InvalidRequest(f"未知的查询参数 {name}", field=name)
            decoded = [v.decode() for v in raw]
            values[name] = decoded if _is_list(fields[name].type) else decoded[-1]
        return convert_text(values, model, "query")

    async def _authenticate(self, *, required: bool) -> None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token:
            self.principal = await identity.authenticate(self.ctx, token.strip())
        elif required:
            raise Unauthenticated("需要登录")

    @property
    def client_ip(self) -> str:
        """The caller's address: the connection's own, unless it comes from a trusted proxy;
        then the nearest address in X-Forwarded-For that is not a trusted proxy itself."""
        address = self.request.remote_ip
        if not self._from_trusted_proxy:
            return address
        trusted = _networks(self.ctx.settings.trusted_proxies)
        forwarded = self.request.headers.get("X-Forwarded-For", "")
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if not _within(hop, trusted):
                return hop
        return address

    @property
    def _from_trusted_proxy(self) -> bool:
        """Whether the connection comes from a proxy whose forwarded headers are believed."""
        return _within(self.request.remote_ip, _networks(self.ctx.settings.trusted_proxies))

    @property
    def over_tls(self) -> bool:
        """Whether the caller reached the service over TLS: the connection's own scheme, unless
        it comes from a trusted proxy that ended TLS; then that proxy's X-Forwarded-Proto."""
        if self.request.protocol == "https":
            return True
        if not self._from_trusted_proxy:
            return False
        proto = self.request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip()
        return proto.lower() == "https"

    @property
    def user_id(self):
        if self.principal is None:
            raise Unauthenticated("需要登录")
        return self.principal.user_id

    async def authorize(self, org_id=None, *, site: dict | None = None) -> None:
        """The operation's permission, held in this organisation (or above it) or for this site."""
        await access.require(
            self.ctx, self.user_id, self.operation.permission, org_id=org_id, site=site
        )

    async def scope(self, org_id=None) -> list:
        """The organisations a list shows: the subtree of `org_id` when asked for (the caller
        must hold the operation's permission there), else every subtree where they hold it."""
        if org_id is None:
            return await access.scope(self.ctx, self.user_id, self.operation.permission)
        await self.authorize(org_id)
        return await orgs.subtree_ids(self.ctx, parse_id(org_id, "org_id"))

    async def scopes(self, org_id=None) -> tuple[list, list]:
        """What a list shows: `scope`'s organisations and, unless one organisation was asked
        for, the sites the caller was named admin of."""
        if org_id is not None:
            return await self.scope(org_id), []
        sites = await access.site_scope(self.ctx, self.user_id, self.operation.permission)
        return await self.scope(), sites

    # -- idempotent retries ------------------------------------------------------------------

    async def _begin_idempotent(self) -> None:
        key = self.request.headers.get("Idempotency-Key")
        if not key:
            return
        owner = str(self.principal.user_id) if self.principal else self.client_ip
        scope = f"{owner} {self.request.method} {self.request.path}"
        stored, claim = await idempotency.begin(self.ctx, scope, key, self.request.body or b"")
        if stored is not None:
            self.set_header("Idempotent-Replayed", "true")
            self._send(stored.status, stored.body, stored.content_type)
            return
        self._idempotency = claim

    # -- output ------------------------------------------------------------------------------

    def reply(self, value: Any, status: int | None = None) -> None:
        op = self.operation
        self._send(status or (op.status if op else 200), encode_json(value))

    def send_file(
        self, body: bytes, content_type: str, filename: str | None = None, *, inline: bool = False
    ) -> None:
        """A 200 with a body that is not JSON: a workbook, a PDF, an image."""
        if filename is not None:
            disposition = "inline" if inline else "attachment"
            self.set_header("Content-Disposition", f'{disposition}; filename="{filename}"')
        self._send(200, body, content_type)

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.set_status(status)
        self.set_header("Content-Type", f"{content_type}; charset=utf-8")
        self._sent = (status, content_type, body)
        self.finish(body)

    async def _execute(self, transforms, *args, **kwargs):
        try:
            await super()._execute(transforms, *args, **kwargs)
        finally:
            claim, self._idempotency = self._idempotency, None
            if claim is not None:
                await self._settle(claim)

    async def _settle(self, claim: idempotency.Claim) -> None:
        sent = getattr(self, "_sent", None)
        # A server error is not an answer worth replaying: the client's retry should run again.
        if sent is not None and sent[0] < 500:
            await idempotency.complete(self.ctx, claim, *sent)
        else:
            await idempotency.release(self.ctx, claim)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        code = CODE_OF_STATUS.get(status_code, "internal_error")
        message = MESSAGE_OF_STATUS.get(status_code) or HTTPStatus(status_code).phrase
        field = None
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, DomainError):
            code, message, field = exc.code, exc.message, exc.field
        elif isinstance(exc, tornado.web.HTTPError) and exc.log_message and status_code < 500:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        envelope = ErrorEnvelope(ErrorBody(code=code, message=message, field=field))
        self._send(status_code, encode_json(envelope))

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, DomainError | tornado.web.HTTPError):
            return
        log.error("unhandled_error", route=self.route, exc_info=(typ, value, tb))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, DomainError):
            if self._finished:
                return
            self.send_error(STATUS_OF_KIND[e.kind], exc_info=(type(e), e, e.__traceback__))
            return
        if isinstance(e, ConnectionFailure | PyMongoError) and not self._finished:
            log.warning("database_unavailable", route=self.route, error=str(e))
            self.send_error(503, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


class NotFoundHandler(BaseHandler):
    """Every unknown route answers with the error envelope."""

    async def prepare(self) -> None:
        await super().prepare()
        raise tornado.web.HTTPError(404)


@functools.cache
def _networks(proxies: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _within(address: str, networks: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # not an address: never a trusted proxy
    return any(ip in network for network in networks)


def _is_list(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) is list


def convert_text(values: dict[str, Any], model: type, where: str) -> Any:
    """Text values (a query, a form) as `model`. Numbers and booleans are read from their text,
    but a time must be written as a time: msgspec's lax mode would take "-4904" as seconds
    since 1970."""
    fields = {f.encode_name: f for f in msgspec.structs.fields(model)}
    times = {}
    for name, value in values.items():
        field = fields.get(name)
        if field is not None and isinstance(value, str) and _is_time(field.type):
            try:
                times[name] = msgspec.convert(value, field.type)
            except msgspec.ValidationError:
                raise InvalidRequest(
                    f"字段 {name}: 时间格式不正确，应如 2026-09-01T09:00:00+08:00", field=name
                ) from None
    try:
        return msgspec.convert({**values, **times}, model, strict=False)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, where) from None


def _is_time(annotation: Any) -> bool:
    parts = typing.get_args(annotation) or (annotation,)
    if typing.get_origin(annotation) is typing.Annotated:
        parts = (parts[0],)
    return any(
        _is_time(part) if typing.get_args(part) else part in (datetime, date) for part in parts
    )


def validation_error(exc: msgspec.ValidationError, where: str) -> InvalidRequest:
    reason, _, path = str(exc).partition(" - at `$")
    reason = _TEXT_REASONS.get(reason, reason)
    parts = [p for p in [path.rstrip("`").lstrip(".")] if p]
    if named := _NAMED_FIELD.search(reason):
        parts.append(named.group(1))
    field = ".".join(parts) or None
    prefix = f"字段 {field}: " if field else ""
    return InvalidRequest(f"{prefix}{reason}", field=field)
