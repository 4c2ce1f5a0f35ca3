"""What a process does once its context is built and before it serves: the domain-event
subscribers on the context's bus, the data migrations, taking over plans whose solver died, and
(in the background, so serving starts at once) repairing seat counters a crash left behind.
`python -m server`, the operator commands, the benchmarks and the test fixtures all call it."""

from __future__ import annotations

from datetime import timedelta

from server.domain import access, catalogue, notifications, planning, seats, signup_repair, stats

REPAIR_LOOKBACK = timedelta(days=30)
"""How far back the repair at start looks: longer than a service is ever left down."""


async def wire(ctx, *, recover_plans: bool = True) -> None:
    notifications.register(ctx.events)
    stats.register(ctx.events)
    catalogue.register(ctx.events)
    signup_repair.register(ctx.events)
    await access.migrate(ctx)
    await seats.backfill(ctx)
    since = ctx.clock.now() - REPAIR_LOOKBACK
    ctx.background.spawn(signup_repair.repair(ctx, since=since), "signup_repair")
    if recover_plans:
        # Plans whose solver died with its process (several may share the database).
        await planning.recover(ctx)
