"""Operational endpoints: health, the OpenAPI document, metrics, and the development clock."""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo.errors import PyMongoError

from server import metrics
from server.domain.errors import NotFound
from server.web import BaseHandler, operation

HEALTH_TIMEOUT_S = 2.0


class Health(msgspec.Struct):
    status: str
    db: str


class HealthHandler(BaseHandler):
    @operation("Liveness and database reachability", response=Health, auth=False, statuses=(503,))
    async def get(self) -> None:
        embedded = self.ctx.embedded
        if embedded is not None and embedded.restarting:
            self.reply(Health(status="degraded", db="restarting"), status=503)
            return
        try:
            await asyncio.wait_for(self.ctx.db.command("ping"), HEALTH_TIMEOUT_S)
        except (TimeoutError, PyMongoError):
            self.reply(Health(status="degraded", db="unreachable"), status=503)
            return
        self.reply(Health(status="ok", db="ok"))


class MetricsHandler(BaseHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(metrics.exposed()))


class DevClock(msgspec.Struct):
    now: str
    offset_s: float


class AdvanceClock(msgspec.Struct, forbid_unknown_fields=True):
    advance_s: Annotated[float, msgspec.Meta(gt=0, le=366 * 86400)]


class DevClockHandler(BaseHandler):
    """Moves the service's clock forward; exists only with IKEPU_DEV_CLOCK=1 and the emulator."""

    async def prepare(self) -> None:
        if not self.ctx.clock.adjustable:
            raise NotFound("资源不存在")
        await super().prepare()

    @operation("Read the development clock", response=DevClock, auth=False, errors=(404,))
    async def get(self) -> None:
        self.reply(self._state())

    @operation(
        "Move the development clock forward",
        body=AdvanceClock,
        response=DevClock,
        auth=False,
        errors=(404,),
    )
    async def post(self) -> None:
        self.ctx.clock.advance(self.body.advance_s)
        self.reply(self._state())

    def _state(self) -> DevClock:
        return DevClock(now=self.ctx.clock.now().isoformat(), offset_s=self.ctx.clock.offset_s)


ROUTES = [
    (r"/healthz", HealthHandler),
    (r"/metrics", MetricsHandler),
    (r"/__dev__/clock", DevClockHandler),
]
