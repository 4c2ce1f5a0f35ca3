"""The organisation tree in memory (server/domain/orgs.py): a new organisation is seen at once in
the process that created it, within CHECK_S in another process on the same database, and read
from the database when asked for by id before then."""

from __future__ import annotations

import asyncio
import time

from server.context import Context
from server.domain import orgs


async def _province(ctx):
    root = await orgs.create_org(ctx, "河南省科协", "province", None, adcode="410000")
    city = await orgs.create_org(ctx, "郑州市科协", "city", root, adcode="410100")
    return root, city


async def test_a_new_org_is_seen_at_once_in_the_process_that_created_it(ctx):
    root, city = await _province(ctx)
    held = await orgs.nodes(ctx)
    assert set(held) == {root, city}
    county = await orgs.create_org(ctx, "金水区科协", "county", city, adcode="410105")
    now = await orgs.nodes(ctx)
    assert now[county].lineage == (county, city, root)
    assert now[county].kind == "county" and now[county].name == "金水区科协"
    assert set(held) == {root, city}, "a snapshot handed out is never changed in place"


async def test_another_process_sees_a_new_org_within_the_bound(ctx):
    root, city = await _province(ctx)
    other = await Context.start(ctx.settings)  # a second process on the same database
    try:
        assert set(await orgs.nodes(other)) == {root, city}
        team = await orgs.create_org(ctx, "郑州市科普志愿服务队", "team", city)
        # By id it is there at once: what the tree lacks is read from the database.
        assert (await orgs.nodes(other, [team]))[team].lineage == (team, city, root)
        began = time.monotonic()
        while team not in await orgs.nodes(other):
            assert time.monotonic() - began < orgs.CHECK_S + 0.5, "not seen within the bound"
            await asyncio.sleep(0.05)
        assert set(await orgs.nodes(other)) == {root, city, team}
    finally:
        await other.close()


async def test_the_tree_reads_the_database_at_most_once_a_check(ctx):
    """Between checks, every organisation comes from memory: the same snapshot."""
    await _province(ctx)
    first = await orgs.nodes(ctx)
    assert await orgs.nodes(ctx) is first
    await asyncio.sleep(orgs.CHECK_S + 0.05)
    assert await orgs.nodes(ctx) is first, "nothing changed: nothing reloaded"
