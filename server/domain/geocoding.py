"""Addresses to locations, through the configured geocoder, cached in MongoDB.

Owns the `geocode_cache` collection. One document per (geocoder kind, normalised address):

    {_id: "<kind>:<address>", kind, address, location: GeoJSON Point | None,
     created_at, expires_at}

A found address is kept for 180 days, a miss (location None) for one day, so a bad address does
not hammer a paid API; `expires_at` carries a TTL index, and a read also ignores an expired
document the TTL monitor has not removed yet. Geocoder failures (timeouts, quota, service errors)
are never cached.

The geocoder comes from the settings — `geocoder` ("gazetteer", the offline county-seat
gazetteer, by default; or "baidu") with `baidu_ak` and `geocoder_timeout_s` — and is built once
per configuration, not per request. It runs in `ctx.executor`, never on the event loop.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import structlog
from geopy.exc import GeocoderTimedOut, GeopyError
from geopy.geocoders.base import Geocoder

from server import geo
from server.domain.errors import InvalidRequest, Unavailable

log = structlog.get_logger(__name__)

COLLECTION = "geocode_cache"
HIT_TTL = timedelta(days=180)
MISS_TTL = timedelta(days=1)
MAX_ADDRESS_LENGTH = 200


# Built geocoders, one per (kind, key, timeout): geopy geocoders are thread-safe to share and
# hold no per-request state. Holds no context.
_geocoders: dict[tuple[str, str | None, float], Geocoder] = {}
_geocoders_lock = threading.Lock()


def normalise_address(address: str) -> str:
    """Strip and collapse every run of whitespace (ideographic spaces too) into one space."""
    return " ".join(address.split())


def _config(ctx) -> tuple[str, str | None, float]:
    settings = ctx.settings
    kind = settings.geocoder
    key = settings.baidu_ak if kind == "baidu" else None
    timeout = settings.geocoder_timeout_s
    return kind, key, timeout


def geocoder_for(ctx) -> Geocoder:
    """The geocoder the settings choose, built on first use and shared afterwards."""
    config = _config(ctx)
    with _geocoders_lock:
        geocoder = _geocoders.get(config)
        if geocoder is None:
            kind, key, timeout = config
            try:
                geocoder = geo.make_geocoder(kind, api_key=key, timeout=timeout)
            except ValueError as exc:  # a configuration error: unknown kind, missing AK
                log.error("geocoder_misconfigured", kind=kind, error=str(exc))
                raise Unavailable(
                    "地址解析服务未正确配置，请提供坐标", code="geocoder_unavailable"
                ) from exc
            _geocoders[config] = geocoder
    return geocoder


async def locate_address(ctx, address: str, *, geocoder: Geocoder | None = None) -> dict[str, Any]:
    """A GeoJSON Point (WGS-84) for a Chinese address.

    Answers from `geocode_cache` when it can; otherwise asks the geocoder (in `ctx.executor`)
    and caches the answer, found or not. `geocoder` replaces the configured one (a test seam);
    its answers are cached under the configured kind.

    Raises InvalidRequest (field "address") for a blank or overlong address, and with code
    `address_not_found` when the address cannot be placed; Unavailable (code
    `geocoder_unavailable`) when the geocoder fails — nothing is cached then.
    """
    if not isinstance(address, str) or not address.strip():
        raise InvalidRequest("请填写地址", field="address")
    normalised = normalise_address(address)
    if len(normalised) > MAX_ADDRESS_LENGTH:
        raise InvalidRequest(f"地址不能超过 {MAX_ADDRESS_LENGTH} 个字", field="address")

    kind = _config(ctx)[0]
    cache_id = f"{kind}:{normalised}"
    cache = ctx.db[COLLECTION]
    now = ctx.clock.now()

    cached = await cache.find_one({"_id": cache_id, "expires_at": {"$gt": now}})
    if cached is not None:
        location = cached.get("location")
    else:
        if geocoder is None:
            geocoder = geocoder_for(ctx)
        try:
            lnglat = await geo.geocode(geocoder, normalised, executor=ctx.executor)
        except GeocoderTimedOut as exc:
            log.warning("geocoder_timed_out", kind=kind)
            raise Unavailable(
                "地址解析服务响应超时，请稍后重试或直接提供坐标", code="geocoder_unavailable"
            ) from exc
        except GeopyError as exc:
            # Only the class: a request error's text carries the URL, and Baidu's holds the AK.
            log.warning("geocoder_failed", kind=kind, error=type(exc).__name__)
            raise Unavailable(
                "地址解析服务暂时不可用，请稍后重试或直接提供坐标", code="geocoder_unavailable"
            ) from exc
        location = geo.geojson_point(*lnglat) if lnglat is not None else None
        await cache.update_one(
            {"_id": cache_id},
            {
                "$set": {
                    "kind": kind,
                    "address": normalised,
                    "location": location,
                    "created_at": now,
                    "expires_at": now + (HIT_TTL if location is not None else MISS_TTL),
                }
            },
            upsert=True,
        )

    if location is None:
        raise InvalidRequest(
            "无法根据地址确定位置，请提供坐标", field="address", code="address_not_found"
        )
    return {"type": "Point", "coordinates": list(location["coordinates"])}
