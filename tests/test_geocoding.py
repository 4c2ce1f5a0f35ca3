"""Tests for server.domain.geocoding: addresses to points, cached in `geocode_cache`."""

from __future__ import annotations

import csv
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from geopy.exc import GeocoderServiceError, GeocoderTimedOut

from server import geo
from server.domain import geocoding
from server.domain.errors import InvalidRequest, Unavailable

ADDRESS = "河南省新乡市辉县市城关街道"
UNKNOWN = "火星基地一号"


def _seat(adcode: str) -> tuple[float, float]:
    path = Path(geo.__file__).resolve().parent.parent / "data" / "china_adcodes.csv"
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["adcode"] == adcode:
                return float(row["longitude"]), float(row["latitude"])
    raise LookupError(adcode)


HUIXIAN = _seat("410782000000")  # 辉县市


class CountingGeocoder(geo.CountySeatGeocoder):
    """The offline gazetteer, counting calls and remembering the thread each ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.threads: list[str] = []

    def geocode(self, query, **kwargs):
        self.calls.append(query)
        self.threads.append(threading.current_thread().name)
        return super().geocode(query, **kwargs)


class FailingGeocoder(geo.CountySeatGeocoder):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error
        self.calls = 0

    def geocode(self, query, **kwargs):
        self.calls += 1
        raise self.error


async def test_lookup_is_cached_and_within_a_kilometre_of_the_seat(ctx):
    geocoder = CountingGeocoder()

    point = await geocoding.locate_address(ctx, ADDRESS, geocoder=geocoder)

    assert point["type"] == "Point"
    assert geo.distance_m(point["coordinates"], HUIXIAN) < 1000
    assert geocoder.calls == [ADDRESS]
    assert geocoder.threads[0].startswith("blocking")  # ctx.executor, not the event loop

    # Same address with surrounding whitespace: answered from the cache.
    again = await geocoding.locate_address(ctx, f" \u3000{ADDRESS}\n ", geocoder=geocoder)
    assert again == point
    assert len(geocoder.calls) == 1

    assert await ctx.db["geocode_cache"].count_documents({}) == 1
    doc = await ctx.db["geocode_cache"].find_one({"address": ADDRESS})
    assert doc["kind"] == "gazetteer"
    assert doc["location"] == point
    assert doc["expires_at"] - ctx.clock.now() > timedelta(days=179)


async def test_whitespace_inside_an_address_is_collapsed_not_removed(ctx):
    geocoder = CountingGeocoder()
    await geocoding.locate_address(ctx, "河南省  新乡市 辉县市", geocoder=geocoder)
    await geocoding.locate_address(ctx, "河南省 新乡市\t\n辉县市 ", geocoder=geocoder)
    assert geocoder.calls == ["河南省 新乡市 辉县市"]


async def test_configured_geocoder_is_built_once_and_used_by_default(ctx):
    assert geocoding.geocoder_for(ctx) is geocoding.geocoder_for(ctx)
    point = await geocoding.locate_address(ctx, ADDRESS)
    assert geo.distance_m(point["coordinates"], HUIXIAN) < 1000


async def test_unknown_address_is_refused_and_the_miss_cached(ctx):
    geocoder = CountingGeocoder()

    with pytest.raises(InvalidRequest) as err:
        await geocoding.locate_address(ctx, UNKNOWN, geocoder=geocoder)
    assert err.value.code == "address_not_found"
    assert err.value.field == "address"
    assert err.value.message == "无法根据地址确定位置，请提供坐标"

    doc = await ctx.db["geocode_cache"].find_one({"address": UNKNOWN})
    assert doc["location"] is None
    assert timedelta(hours=23) < doc["expires_at"] - ctx.clock.now() <= timedelta(days=1)

    with pytest.raises(InvalidRequest) as err:
        await geocoding.locate_address(ctx, UNKNOWN, geocoder=geocoder)
    assert err.value.code == "address_not_found"
    assert len(geocoder.calls) == 1


async def test_expired_miss_is_asked_again(ctx):
    geocoder = CountingGeocoder()
    with pytest.raises(InvalidRequest):
        await geocoding.locate_address(ctx, UNKNOWN, geocoder=geocoder)
    ctx.clock.advance(timedelta(days=1, minutes=1).total_seconds())
    with pytest.raises(InvalidRequest):
        await geocoding.locate_address(ctx, UNKNOWN, geocoder=geocoder)
    assert len(geocoder.calls) == 2
    assert await ctx.db["geocode_cache"].count_documents({}) == 1


@pytest.mark.parametrize(
    "error", [GeocoderTimedOut("timed out"), GeocoderServiceError("quota exceeded")]
)
async def test_geocoder_failure_is_unavailable_and_not_cached(ctx, error):
    failing = FailingGeocoder(error)

    with pytest.raises(Unavailable) as err:
        await geocoding.locate_address(ctx, ADDRESS, geocoder=failing)
    assert err.value.code == "geocoder_unavailable"
    assert "请稍后重试" in err.value.message
    assert await ctx.db["geocode_cache"].count_documents({}) == 0

    # Nothing was cached, so the next attempt asks again — and a working geocoder answers.
    with pytest.raises(Unavailable):
        await geocoding.locate_address(ctx, ADDRESS, geocoder=failing)
    assert failing.calls == 2
    point = await geocoding.locate_address(ctx, ADDRESS, geocoder=CountingGeocoder())
    assert geo.distance_m(point["coordinates"], HUIXIAN) < 1000


@pytest.mark.parametrize("address", ["", "   ", "\u3000", "地" * 201])
async def test_blank_or_overlong_address_is_invalid_without_asking(ctx, address):
    geocoder = CountingGeocoder()
    with pytest.raises(InvalidRequest) as err:
        await geocoding.locate_address(ctx, address, geocoder=geocoder)
    assert err.value.field == "address"
    assert err.value.code == "invalid_request"
    assert geocoder.calls == []
    assert await ctx.db["geocode_cache"].count_documents({}) == 0
