"""Geocoders and geocoding.

Geocoding goes through geopy: :class:`CountySeatGeocoder` is an offline gazetteer over the
county seats in ``server/data/china_adcodes.csv``; :func:`make_geocoder` can also build geopy's
``BaiduV3``. :func:`geocode` runs either in an executor so the event loop never blocks, and
returns WGS-84.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from geopy.adapters import BaseAsyncAdapter
from geopy.geocoders import Baidu, BaiduV3
from geopy.geocoders.base import DEFAULT_SENTINEL, Geocoder
from geopy.location import Location
from geopy.point import Point

from server.geo.coords import LngLat, check_coord_type, out_of_china, to_wgs84
from server.geo.gazetteer import Gazetteer, Unit, gazetteer


def _location(unit: Unit, **extra: Any) -> Location:
    raw = unit.as_dict()
    raw.update(extra)
    return Location(unit.name, (unit.lat, unit.lng), raw)


class CountySeatGeocoder(Geocoder):
    """Offline geocoder: finds the administrative units named in a Chinese address and answers
    with the seat of the most specific one.

    "河南省新乡市辉县市城关街道" → 辉县市. Official names and the usual short forms match
    (辉县, 新乡, 河南, 黔南州, 管城区). A county name shared by several places (鼓楼区) is
    settled by the province or city named beside it; when that is not enough, the answer is
    their common province or city, or None. Coordinates are approximate seats, taken as WGS-84.
    No network; the data file is read once, on first use.
    """

    coord_type = "wgs84"

    def __init__(self, *, path: Path | str | None = None, timeout: Any = DEFAULT_SENTINEL) -> None:
        super().__init__(timeout=timeout)
        self._path = path

    @property
    def _gaz(self) -> Gazetteer:
        return gazetteer(self._path)

    def geocode(
        self, query: str, *, exactly_one: bool = True, timeout: Any = DEFAULT_SENTINEL
    ) -> Location | list[Location] | None:
        """The seat of the most specific unit named in ``query`` (a Location whose raw holds
        adcode, level, name, full_name, lng, lat and the matched text), or None. With
        ``exactly_one=False``, every unit found, best first (or None)."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        candidates, best, best_text = self._gaz.search(query)
        if not exactly_one:
            return [_location(u, matched=t) for u, t in candidates] or None
        return _location(best, matched=best_text) if best else None

    def reverse(
        self, query: Any, *, exactly_one: bool = True, timeout: Any = DEFAULT_SENTINEL
    ) -> Location | list[Location] | None:
        """The nearest county seat to ``query`` (geopy order: a Point, ``(lat, lng)`` or
        "lat, lng"), with ``distance_m`` in raw; None outside China. With
        ``exactly_one=False``, the ten nearest, nearest first."""
        point = Point(query)
        lat, lng = point.latitude, point.longitude
        if out_of_china(lng, lat):
            return None
        nearest = self._gaz.nearest_counties(lng, lat, 1 if exactly_one else 10)
        locations = [_location(u, distance_m=d) for u, d in nearest]
        return locations[0] if exactly_one else locations


GEOCODER_KINDS = ("gazetteer", "baidu")


def make_geocoder(kind: str, api_key: str | None = None, timeout: float = 10.0) -> Geocoder:
    """ "gazetteer" → :class:`CountySeatGeocoder` (offline); "baidu" → geopy's ``BaiduV3``,
    which needs ``api_key`` (the AK)."""
    if kind == "gazetteer":
        return CountySeatGeocoder(timeout=timeout)
    if kind == "baidu":
        if not api_key:
            raise ValueError("the baidu geocoder needs an API key (AK)")
        return BaiduV3(api_key=api_key, timeout=timeout, user_agent="ikepu")
    raise ValueError(f"geocoder kind must be one of {', '.join(GEOCODER_KINDS)}; got {kind!r}")


def result_coord_type(geocoder: Geocoder) -> str:
    """The coordinate system a geocoder answers in.

    Baidu's geocoding API answers in BD-09 (bd09ll) unless ``ret_coordtype`` is sent, and
    geopy's Baidu/BaiduV3 never send it; other geopy geocoders answer in WGS-84. A geocoder
    may say otherwise with a ``coord_type`` attribute.
    """
    declared = getattr(geocoder, "coord_type", None)
    if declared is not None:
        check_coord_type(declared)
        return declared
    if isinstance(geocoder, Baidu):
        return "bd09"
    return "wgs84"


async def geocode(
    geocoder: Geocoder, address: str, executor: Executor | None = None
) -> LngLat | None:
    """Geocode ``address`` to WGS-84 ``(lng, lat)``, or None if nothing was found.

    A blocking geocoder runs in ``executor`` (the loop's default when None), so the event loop
    never waits on it; a geocoder built on an async geopy adapter is awaited directly. geopy's
    errors (GeocoderTimedOut, GeocoderServiceError, …) propagate.
    """
    if not address or not address.strip():
        return None
    if isinstance(getattr(geocoder, "adapter", None), BaseAsyncAdapter):
        location = await geocoder.geocode(address, exactly_one=True)
    else:
        loop = asyncio.get_running_loop()
        call = functools.partial(geocoder.geocode, address, exactly_one=True)
        location = await loop.run_in_executor(executor, call)
    if location is None:
        return None
    return to_wgs84(location.longitude, location.latitude, result_coord_type(geocoder))
