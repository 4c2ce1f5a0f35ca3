"""Rate limits on the real database, with the service's adjustable clock standing in for time."""

from __future__ import annotations

import pytest

from server.domain import ratelimit
from server.domain.errors import RateLimited


async def _passes(ctx, bucket: str, limit: int) -> bool:
    try:
        await ratelimit.hit(ctx, bucket, limit)
    except RateLimited:
        return False
    return True


def _to_just_before_a_minute_turns(ctx) -> None:
    ctx.clock.advance(60 - ctx.clock.time() % 60 - 0.5)


async def test_the_limit_holds_across_the_turn_of_a_minute(ctx):
    _to_just_before_a_minute_turns(ctx)
    assert [await _passes(ctx, "test:turn", 3) for _ in range(3)] == [True, True, True]
    ctx.clock.advance(1)
    assert not await _passes(ctx, "test:turn", 3)


async def test_an_attempt_passes_again_a_window_after_the_oldest_counted(ctx):
    assert await _passes(ctx, "test:slide", 2)
    ctx.clock.advance(30)
    assert await _passes(ctx, "test:slide", 2)
    ctx.clock.advance(29)
    assert not await _passes(ctx, "test:slide", 2)
    ctx.clock.advance(1.5)
    assert await _passes(ctx, "test:slide", 2)
    assert not await _passes(ctx, "test:slide", 2)


async def test_refused_attempts_do_not_lengthen_the_wait(ctx):
    assert await _passes(ctx, "test:refused", 1)
    for _ in range(5):
        ctx.clock.advance(10)
        assert not await _passes(ctx, "test:refused", 1)
    ctx.clock.advance(11)
    assert await _passes(ctx, "test:refused", 1)


async def test_buckets_count_apart(ctx):
    assert await _passes(ctx, "test:a", 1)
    assert await _passes(ctx, "test:b", 1)
    assert not await _passes(ctx, "test:a", 1)


@pytest.mark.parametrize("limit", [1, 4])
async def test_a_changed_limit_counts_afresh(ctx, limit):
    for _ in range(3):
        await _passes(ctx, "test:changed", 3)
    assert await _passes(ctx, "test:changed", limit)
