"""Reminder dispatch: 10,000 due reminders, the WeChat emulator answering in 50 ms, two
dispatchers at once. Prints one JSON line:
{"bench": "reminders", "sent", "duplicates", "lost", "seconds", "per_second"}.

Usage: python bench/reminders.py [--reminders N] [--latency-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _support import fresh_parts, start_context
from bson import ObjectId

from server.domain import notifications
from server.logs import configure_logging


async def run(reminders: int, latency_ms: float) -> dict:
    configure_logging("json", "warning")
    async with fresh_parts(latency_ms) as (state, settings):
        contexts = [await start_context(settings) for _ in range(2)]
        try:
            return await _dispatch(contexts, state, reminders)
        finally:
            for c in contexts:
                await c.close()


async def _dispatch(contexts, state, reminders: int) -> dict:
    """Due reminders written in bulk, then two dispatchers at once; counted at the emulator."""
    ctx = contexts[0]
    users = [ObjectId() for _ in range(reminders)]
    template = ctx.settings.template_activity_reminder
    # Setup in bulk, straight into the collections: the subject is dispatch, not setup
    # (reminders carry the openid, so dispatch never reads users).
    await ctx.db.subscriptions.insert_many(
        [
            {
                "_id": f"{u}:{template}",
                "user_id": u,
                "template_id": template,
                "remaining": 1,
            }
            for u in users
        ]
    )
    for i in range(reminders):  # what the users accepted at WeChat (it refuses beyond that)
        state.accept_subscriptions(f"o_bench{i}", [template])
    now = ctx.clock.now()
    await ctx.db.reminders.insert_many(
        [
            {
                "user_id": u,
                "openid": f"o_bench{i}",
                "template_key": "activity_reminder",
                "template_id": template,
                "page": "pages/index",
                "data": {"thing1": {"value": "科普活动"}},
                "due_at": now,
                "state": "pending",
                "attempts": 0,
                "dedupe": f"bench:{i}",
            }
            for i, u in enumerate(users)
        ]
    )
    began = time.perf_counter()
    await asyncio.gather(*[notifications.dispatch_due(c, f"d{i}") for i, c in enumerate(contexts)])
    seconds = time.perf_counter() - began
    received = collections.Counter(m["touser"] for m in state.messages)
    expected = {f"o_bench{i}" for i in range(reminders)}
    return {
        "bench": "reminders",
        "sent": sum(received.values()),
        "duplicates": sum(n - 1 for n in received.values() if n > 1),
        "lost": len(expected - set(received)),
        "seconds": round(seconds, 2),
        "per_second": round(reminders / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reminders", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.reminders, args.latency_ms))))


if __name__ == "__main__":
    main()
