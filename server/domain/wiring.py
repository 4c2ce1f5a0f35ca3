"""What a process does once its context is built and before it serves: the domain-event
subscribers on the context's bus, the data migrations, and taking over plans whose solver died.
`python -m server`, the operator commands, the benchmarks and the test fixtures all call it."""

from __future__ import annotations

from server.domain import access, catalogue, notifications, planning, seats, stats


async def wire(ctx, *, recover_plans: bool = True) -> None:
    notifications.register(ctx.events)
    stats.register(ctx.events)
    catalogue.register(ctx.events)
    await access.migrate(ctx)
    await seats.backfill(ctx)
    if recover_plans:
        # Plans whose solver died with its process (several may share the database).
        await planning.recover(ctx)
