"""Coordinate systems (WGS-84, GCJ-02, BD-09) and validated GeoJSON points.

Every coordinate pair is ``(lng, lat)`` in degrees.

The GCJ-02 and BD-09 formulas are the widely published ones (Krasovsky ellipsoid,
``a = 6378245.0``, ``ee = 0.00669342162296594323``; the usual ``out_of_china`` box outside which
GCJ-02 equals WGS-84). The inverse transforms are iterative and exact to well under a
centimetre, not the one-step approximations.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

LngLat = tuple[float, float]

COORD_TYPES = ("wgs84", "gcj02", "bd09")

# --------------------------------------------------------------------------------------------
# Coordinate systems
# --------------------------------------------------------------------------------------------

_A = 6378245.0  # Krasovsky 1940 semi-major axis
_EE = 0.00669342162296594323  # Krasovsky 1940 first eccentricity squared
_X_PI = math.pi * 3000.0 / 180.0

# Inverse iterations stop when a step moves less than this (degrees, ~1e-5 m).
_INVERSE_TOL_DEG = 1e-10
_INVERSE_MAX_ITER = 30


def out_of_china(lng: float, lat: float) -> bool:
    """The standard rectangle outside which GCJ-02 is defined to equal WGS-84."""
    return not (72.004 <= lng <= 137.8347 and 0.8293 <= lat <= 55.8271)


def _transform_lat(x: float, y: float) -> float:
    ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (160.0 * math.sin(y / 12.0 * math.pi) + 320.0 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    return ret


def _transform_lng(x: float, y: float) -> float:
    ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    return ret


def _gcj02_offset(lng: float, lat: float) -> LngLat:
    """GCJ-02 minus WGS-84 at a WGS-84 point, in degrees, ignoring the out-of-China rule."""
    dlat = _transform_lat(lng - 105.0, lat - 35.0)
    dlng = _transform_lng(lng - 105.0, lat - 35.0)
    radlat = math.radians(lat)
    magic = 1.0 - _EE * math.sin(radlat) ** 2
    sqrtmagic = math.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrtmagic) * math.pi)
    dlng = (dlng * 180.0) / (_A / sqrtmagic * math.cos(radlat) * math.pi)
    return dlng, dlat


def wgs84_to_gcj02(lng: float, lat: float) -> LngLat:
    """WGS-84 → GCJ-02 (the published forward formula)."""
    if out_of_china(lng, lat):
        return lng, lat
    dlng, dlat = _gcj02_offset(lng, lat)
    return lng + dlng, lat + dlat


def gcj02_to_wgs84(lng: float, lat: float) -> LngLat:
    """GCJ-02 → WGS-84 by fixed-point iteration on the forward formula (error ≪ 0.5 m)."""
    if out_of_china(lng, lat):
        return lng, lat
    dlng, dlat = _gcj02_offset(lng, lat)
    w_lng, w_lat = lng - dlng, lat - dlat
    for _ in range(_INVERSE_MAX_ITER):
        dlng, dlat = _gcj02_offset(w_lng, w_lat)
        step_lng = lng - (w_lng + dlng)
        step_lat = lat - (w_lat + dlat)
        w_lng += step_lng
        w_lat += step_lat
        if abs(step_lng) < _INVERSE_TOL_DEG and abs(step_lat) < _INVERSE_TOL_DEG:
            break
    return w_lng, w_lat


def gcj02_to_bd09(lng: float, lat: float) -> LngLat:
    """GCJ-02 → BD-09 (Baidu's published forward formula)."""
    z = math.hypot(lng, lat) + 0.00002 * math.sin(lat * _X_PI)
    theta = math.atan2(lat, lng) + 0.000003 * math.cos(lng * _X_PI)
    return z * math.cos(theta) + 0.0065, z * math.sin(theta) + 0.006


def bd09_to_gcj02(lng: float, lat: float) -> LngLat:
    """BD-09 → GCJ-02: the published approximate inverse, refined by iteration to be exact."""
    x, y = lng - 0.0065, lat - 0.006
    z = math.hypot(x, y) - 0.00002 * math.sin(y * _X_PI)
    theta = math.atan2(y, x) - 0.000003 * math.cos(x * _X_PI)
    g_lng, g_lat = z * math.cos(theta), z * math.sin(theta)
    for _ in range(_INVERSE_MAX_ITER):
        b_lng, b_lat = gcj02_to_bd09(g_lng, g_lat)
        step_lng, step_lat = lng - b_lng, lat - b_lat
        g_lng += step_lng
        g_lat += step_lat
        if abs(step_lng) < _INVERSE_TOL_DEG and abs(step_lat) < _INVERSE_TOL_DEG:
            break
    return g_lng, g_lat


def check_coord_type(coord_type: str) -> None:
    if coord_type not in COORD_TYPES:
        raise ValueError(f"coord_type must be one of {', '.join(COORD_TYPES)}; got {coord_type!r}")


def to_wgs84(lng: float, lat: float, coord_type: str) -> LngLat:
    """Convert a point given in ``coord_type`` ("wgs84", "gcj02" or "bd09") to WGS-84."""
    check_coord_type(coord_type)
    if coord_type == "gcj02":
        return gcj02_to_wgs84(lng, lat)
    if coord_type == "bd09":
        return gcj02_to_wgs84(*bd09_to_gcj02(lng, lat))
    return float(lng), float(lat)


def from_wgs84(lng: float, lat: float, coord_type: str) -> LngLat:
    """Convert a WGS-84 point to ``coord_type`` ("wgs84", "gcj02" or "bd09")."""
    check_coord_type(coord_type)
    if coord_type == "gcj02":
        return wgs84_to_gcj02(lng, lat)
    if coord_type == "bd09":
        return gcj02_to_bd09(*wgs84_to_gcj02(lng, lat))
    return float(lng), float(lat)


# --------------------------------------------------------------------------------------------
# GeoJSON points
# --------------------------------------------------------------------------------------------


def _finite_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return number


def geojson_point(lng: float, lat: float) -> dict[str, Any]:
    """A GeoJSON Point ``{"type": "Point", "coordinates": [lng, lat]}``, validated.

    Raises ValueError unless lng is a finite number in [-180, 180] and lat one in [-90, 90].
    """
    lng_f = _finite_number(lng, "longitude")
    lat_f = _finite_number(lat, "latitude")
    if not -180.0 <= lng_f <= 180.0:
        raise ValueError(f"longitude must be between -180 and 180, got {lng_f}")
    if not -90.0 <= lat_f <= 90.0:
        raise ValueError(f"latitude must be between -90 and 90, got {lat_f}")
    return {"type": "Point", "coordinates": [lng_f, lat_f]}


def wgs84_point(lng: float, lat: float, coord_type: str) -> dict[str, Any]:
    """The GeoJSON WGS-84 point of a point given in ``coord_type``, validated as given and as
    converted (BD-09's offset carries a point at -180° past the range); ValueError otherwise."""
    given = geojson_point(lng, lat)["coordinates"]
    return geojson_point(*to_wgs84(*given, coord_type))


def point_lnglat(point: Any) -> LngLat:
    """``(lng, lat)`` of a GeoJSON Point, validated like :func:`geojson_point`."""
    if not isinstance(point, dict) or point.get("type") != "Point":
        raise ValueError(f"expected a GeoJSON Point, got {point!r}")
    coords = point.get("coordinates")
    if not isinstance(coords, list | tuple) or len(coords) != 2:
        raise ValueError(f"a GeoJSON Point needs coordinates [lng, lat], got {coords!r}")
    lng, lat = geojson_point(coords[0], coords[1])["coordinates"]
    return lng, lat
