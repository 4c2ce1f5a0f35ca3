"""Child processes of the service (route solvers and their progress queue): none may hold the
service's listening sockets or signal handlers, and none may outlive it.

They start clean (the `spawn` method: a fresh interpreter that inherits no file descriptors but
the ones it is given, and default signal handlers), ignore the terminal's Ctrl-C (the service
decides when they stop), and ask the kernel for SIGKILL when their parent dies (Linux's
parent-death signal), so a service killed with SIGKILL takes them with it.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.managers import SyncManager

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
