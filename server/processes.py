"""Child processes of the service (route solvers and their progress queue): none may hold the
service's listening sockets or signal handlers, and none may outlive it.

They start clean (the `spawn` method: a fresh interpreter that inherits no file descriptors but
the ones it is given, and default signal handlers), ignore the terminal's Ctrl-C (the service
decides when they stop), and ask the kernel for SIGKILL when their parent dies (Linux's
parent-death signal), so a service killed with SIGKILL takes them with it.

The service keeps them in one :class:`Workers`: the solver pool and the manager serving the
queues and events solves share with it, started on first use and kept while the service runs.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.managers import SyncManager
from typing import Any

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """In a child: be killed when the parent dies (and exit now if it already has)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def _init_child(parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)


def process_pool(max_workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=max_workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_child,
        initargs=(os.getpid(),),
    )


def manager() -> SyncManager:
    """A started manager (for queues shared with pool workers), a clean child like them."""
    started = SyncManager(ctx=multiprocessing.get_context("spawn"))
    started.start(initializer=_init_child, initargs=(os.getpid(),))
    return started


class Workers:
    """The service's solver pool and its manager, each started on first use and kept while
    the service runs (a manager takes half a second to start: once per plan, that was a
    dispatcher's wait), each replaced at its next use when it died. Several contexts in one
    process may share one (the tests' contexts do)."""

    def __init__(self, max_workers: int = 2) -> None:
        self.max_workers = max_workers
        # Two locks: the event loop takes the pool's, and must not wait while an executor
        # thread holds the manager's for the half second a manager takes to start.
        self._pool_lock = threading.Lock()
        self._manager_lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._manager: SyncManager | None = None

    @property
    def pool(self) -> ProcessPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = process_pool(self.max_workers)
            return self._pool

    def discard_pool(self, pool: ProcessPoolExecutor) -> None:
        """Drops a pool that a dying worker broke for good; the next use starts a new one."""
        with self._pool_lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def queue(self) -> Any:
        """A new queue that pool workers can write to (blocking: may start the manager)."""
        return self._on_manager(lambda started: started.Queue())

    def event(self) -> Any:
        """A new event that pool workers can poll (blocking: may start the manager)."""
        return self._on_manager(lambda started: started.Event())

    def _on_manager(self, make):
        with self._manager_lock:
            if self._manager is not None:
                try:
                    return make(self._manager)
                except (EOFError, OSError):
                    self._manager = None  # killed, or out of memory: a new one serves
            self._manager = manager()
            return make(self._manager)

    def close(self) -> None:
        """Stops both (blocking: the manager takes a tenth of a second to stop)."""
        with self._pool_lock, self._manager_lock:
            pool, started = self._pool, self._manager
            self._pool = self._manager = None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if started is not None:
            started.shutdown()
