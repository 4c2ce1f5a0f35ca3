"""Prometheus metrics that add up across the service processes.

One process: prometheus-client's default registry, as it is. Several (server/supervisor.py):
prometheus-client's multiprocess mode. The supervisor gives every service process the same
empty directory in `PROMETHEUS_MULTIPROC_DIR` before it starts (the client picks its value
store when it is first imported, so the variable must be there from the start); each process
writes its samples to memory-mapped files of its own there, and `/metrics` on any of them
reads every file: counters and histograms summed over all processes, those that died and were
restarted included (so totals never go backwards). A per-process port was the alternative; it
makes the scraper, not the service, add up, and `/metrics` on one port would tell only that
process's part.

Per-process collectors (process CPU and memory, the garbage collector) describe one process
only and cannot be summed, so they are left out in multiprocess mode.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_shared(directory: Path) -> dict[str, str]:
    """In the supervisor: an empty directory for the processes' samples (left-overs of an
    earlier run would be summed in); the environment to start each process with."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return {ENV: str(directory)}


def process_gone(directory: Path, pid: int) -> None:
    """In the supervisor, when a service process has exited: drop the samples that describe
    only a live process (live gauges); its counters and histograms stay in the sums."""
    multiprocess.mark_process_dead(pid, str(directory))


def exposed() -> CollectorRegistry:
    """The registry `/metrics` exposes: in a service process started by the supervisor, a
    fresh one reading every process's files (per scrape, as prometheus-client's multiprocess
    mode asks); otherwise the default registry, as it is."""
    if ENV not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry
