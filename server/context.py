"""One object holding what every handler and job needs: settings, database, WeChat, clock,
crypto, executors, and the process's own state (the domain-event bus, running solves, requests in
flight). Built once at start, wired by `server.domain.wiring.wire`, handed to handlers and jobs,
closed at stop."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from config import Settings
from server import processes
from server.clock import Clock
from server.crypto import Crypto, load_or_create_keys
from server.db import EmbeddedDatabase, close_client, database, ensure_indexes, make_client
from server.db.snapshots import Snapshot
from server.domain.catalogue import Catalogue
from server.domain.events import EventBus
from server.domain.identity import SessionCache
from server.domain.orgs import OrgTree
from server.domain.planning import Solves
from server.domain.projects import held_projects
from server.domain.seats import Turns
from server.domain.stats.report import LeaderHints
from server.wechat.client import WeChatAdapter

log = structlog.get_logger(__name__)


class InFlight:
    """Counts requests being handled, so shutdown can wait for them to finish."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def drained(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


class Background:
    """Work a process does beside serving (the seat repair at start), cancelled at close; a
    failure is logged, never lost."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, work, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background_task_failed", task=task.get_name(), error=repr(task.exception()))

    async def drain(self, *, cancel: bool = False) -> None:
        tasks = list(self._tasks)
        for task in tasks if cancel else ():
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class Context:
    settings: Settings
    clock: Clock
    client: Any
    db: Any
    crypto: Crypto
    wechat: WeChatAdapter
    executor: ThreadPoolExecutor
    wechat_executor: ThreadPoolExecutor
    embedded: EmbeddedDatabase | None = None
    events: EventBus = field(default_factory=EventBus)
    in_flight: InFlight = field(default_factory=InFlight)
    solves: Solves = field(default_factory=Solves)
    sessions: SessionCache = field(default_factory=SessionCache)
    seat_turns: Turns = field(default_factory=Turns)
    catalogue: Catalogue = field(default_factory=Catalogue)
    org_tree: OrgTree = field(default_factory=OrgTree)
    projects: Snapshot = field(default_factory=held_projects)
    report_hints: LeaderHints = field(default_factory=LeaderHints)
    background: Background = field(default_factory=Background)
    workers: processes.Workers = field(default_factory=processes.Workers)
    """CPU-heavy work (route solving): clean children that die with the service."""
    owns_workers: bool = True

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        workers: processes.Workers | None = None,
    ) -> Context:
        """``workers`` lends the context another's pool and manager, which it leaves running."""
        from server.wechat import emulator, token_keeper

        embedded = None
        uri = settings.mongodb_uri
        if not uri:
            data_dir = Path(settings.data_dir)
            embedded = EmbeddedDatabase(
                str(data_dir / "db"),
                host="127.0.0.1",
                port=settings.embedded_db_port,
                test_commands=settings.embedded_db_test_commands,
                log_path=str(data_dir / "secantusd.log"),
            )
            uri = await embedded.start()
            embedded.supervise()
        try:
            client = make_client(uri, settings.mongo_driver)
            db = database(client, settings.mongodb_db)
            await ensure_indexes(db)
        except BaseException:
            if embedded:
                await embedded.stop()
            raise
        secret_key, data_key = load_or_create_keys(
            settings.secret_key, settings.data_key, settings.data_dir
        )
        wechat_executor = ThreadPoolExecutor(settings.wechat_threads, "wechat")
        ctx = cls(
            settings=settings,
            clock=clock or Clock(adjustable=settings.dev_clock and settings.uses_wechat_emulator),
            client=client,
            db=db,
            crypto=Crypto(secret_key, data_key),
            wechat=None,  # set just below: the token keeper needs the context
            executor=ThreadPoolExecutor(4, "blocking"),
            wechat_executor=wechat_executor,
            embedded=embedded,
            workers=workers or processes.Workers(),
            owns_workers=workers is None,
        )
        keeper = token_keeper.TokenKeeper(ctx)
        ctx.wechat = WeChatAdapter(
            appid=settings.wechat_appid or emulator.DEFAULT_APPID,
            secret=settings.wechat_secret or emulator.DEFAULT_SECRET,
            api_base_url=settings.wechat_api_base,
            executor=wechat_executor,
            timeout=settings.wechat_timeout_s,
            access_token_getter=keeper.get,
            access_token_invalidator=keeper.invalidate,
        )
        return ctx

    async def close(self) -> None:
        await self.background.drain(cancel=True)
        await self.solves.drain(cancel=True)
        self.wechat_executor.shutdown(wait=False, cancel_futures=True)
        if self.owns_workers:
            await self.run_blocking(self.workers.close)
        self.executor.shutdown(wait=False, cancel_futures=True)
        await close_client(self.client)
        if self.embedded is not None:
            await self.embedded.stop()

    async def run_blocking(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
