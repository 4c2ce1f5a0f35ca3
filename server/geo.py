"""Coordinate systems, distances, GeoJSON points and geocoding.

Conventions (see ARCHITECTURE.md): every coordinate pair in this module is ``(lng, lat)`` in
degrees, and the database stores WGS-84. Clients may speak GCJ-02 (WeChat maps, Amap, Tencent)
or BD-09 (Baidu); :func:`to_wgs84` and :func:`from_wgs84` convert at the edges.

The GCJ-02 and BD-09 formulas are the widely published ones (Krasovsky ellipsoid,
``a = 6378245.0``, ``ee = 0.00669342162296594323``; the usual ``out_of_china`` box outside which
GCJ-02 equals WGS-84). The inverse transforms are iterative and exact to well under a
centimetre, not the one-step approximations.

Geocoding goes through geopy: :class:`CountySeatGeocoder` is an offline gazetteer over the
county seats in ``server/data/china_adcodes.csv``; :func:`make_geocoder` can also build geopy's
``BaiduV3``. :func:`geocode` runs either in an executor so the event loop never blocks, and
returns WGS-84.

Plain Python: no tornado, no database.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import math
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
from geopy.adapters import BaseAsyncAdapter
from geopy.distance import geodesic
from geopy.geocoders import Baidu, BaiduV3
from geopy.geocoders.base import DEFAULT_SENTINEL, Geocoder
from geopy.location import Location
from geopy.point import Point

__all__ = [
    "COORD_TYPES",
    "EARTH_RADIUS_M",
    "GEOCODER_KINDS",
    "CountySeatGeocoder",
    "adcode_lookup",
    "bd09_to_gcj02",
    "counties_of",
    "distance_m",
    "distance_matrix_m",
    "from_wgs84",
    "gcj02_to_bd09",
    "gcj02_to_wgs84",
    "geocode",
    "geojson_point",
    "level_of",
    "make_geocoder",
    "out_of_china",
    "point_lnglat",
    "result_coord_type",
    "to_wgs84",
    "wgs84_to_gcj02",
]

LngLat = tuple[float, float]

COORD_TYPES = ("wgs84", "gcj02", "bd09")

# Mean earth radius (IUGG), the value geopy's great_circle uses.
EARTH_RADIUS_M = 6_371_009.0

DATA_DIR = Path(__file__).resolve().parent / "data"
ADCODES_CSV = DATA_DIR / "china_adcodes.csv"

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


def _check_coord_type(coord_type: str) -> None:
    if coord_type not in COORD_TYPES:
        raise ValueError(f"coord_type must be one of {', '.join(COORD_TYPES)}; got {coord_type!r}")


def to_wgs84(lng: float, lat: float, coord_type: str) -> LngLat:
    """Convert a point given in ``coord_type`` ("wgs84", "gcj02" or "bd09") to WGS-84."""
    _check_coord_type(coord_type)
    if coord_type == "gcj02":
        return gcj02_to_wgs84(lng, lat)
    if coord_type == "bd09":
        return gcj02_to_wgs84(*bd09_to_gcj02(lng, lat))
    return float(lng), float(lat)


def from_wgs84(lng: float, lat: float, coord_type: str) -> LngLat:
    """Convert a WGS-84 point to ``coord_type`` ("wgs84", "gcj02" or "bd09")."""
    _check_coord_type(coord_type)
    if coord_type == "gcj02":
        return wgs84_to_gcj02(lng, lat)
    if coord_type == "bd09":
        return gcj02_to_bd09(*wgs84_to_gcj02(lng, lat))
    return float(lng), float(lat)


# --------------------------------------------------------------------------------------------
# Distances
# --------------------------------------------------------------------------------------------


def distance_m(a: Sequence[float], b: Sequence[float]) -> float:
    """Geodesic (WGS-84 ellipsoid) distance in metres between two ``(lng, lat)`` points."""
    return float(geodesic((a[1], a[0]), (b[1], b[0])).meters)


def distance_matrix_m(lngs: Iterable[float], lats: Iterable[float]) -> np.ndarray:
    """All-pairs great-circle (haversine) distances in metres, an ``(N, N)`` float64 array.

    Symmetric with a zero diagonal; within ~0.5 % of the geodesic. N ≈ 1000 takes a few
    tens of milliseconds and ~50 MB of temporaries.
    """
    lng = np.asarray(lngs, dtype=np.float64)
    lat = np.asarray(lats, dtype=np.float64)
    if lng.ndim != 1 or lat.ndim != 1 or lng.shape != lat.shape:
        raise ValueError(
            f"lngs and lats must be 1-D sequences of equal length; got shapes "
            f"{lng.shape} and {lat.shape}"
        )
    if not (np.all(np.isfinite(lng)) and np.all(np.isfinite(lat))):
        raise ValueError("lngs and lats must be finite numbers")
    phi = np.radians(lat)
    lam = np.radians(lng)
    sin_dphi = np.sin((phi[:, None] - phi[None, :]) * 0.5)
    sin_dlam = np.sin((lam[:, None] - lam[None, :]) * 0.5)
    cos_phi = np.cos(phi)
    h = sin_dphi * sin_dphi
    h += np.outer(cos_phi, cos_phi) * (sin_dlam * sin_dlam)
    np.clip(h, 0.0, 1.0, out=h)
    d = np.arcsin(np.sqrt(h, out=h), out=h)
    d *= 2.0 * EARTH_RADIUS_M
    return d


def _haversine_to_many(lng: float, lat: float, lngs: np.ndarray, lats: np.ndarray) -> np.ndarray:
    phi, lam = math.radians(lat), math.radians(lng)
    phis, lams = np.radians(lats), np.radians(lngs)
    h = (
        np.sin((phis - phi) * 0.5) ** 2
        + math.cos(phi) * np.cos(phis) * np.sin((lams - lam) * 0.5) ** 2
    )
    return 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


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


def point_lnglat(point: Any) -> LngLat:
    """``(lng, lat)`` of a GeoJSON Point, validated like :func:`geojson_point`."""
    if not isinstance(point, dict) or point.get("type") != "Point":
        raise ValueError(f"expected a GeoJSON Point, got {point!r}")
    coords = point.get("coordinates")
    if not isinstance(coords, list | tuple) or len(coords) != 2:
        raise ValueError(f"a GeoJSON Point needs coordinates [lng, lat], got {coords!r}")
    lng, lat = geojson_point(coords[0], coords[1])["coordinates"]
    return lng, lat


# --------------------------------------------------------------------------------------------
# Gazetteer: administrative units and their seats
# --------------------------------------------------------------------------------------------

_LEVEL_RANK = {"province": 0, "city": 1, "county": 2}

# Rows that are grouping placeholders, not places.
_PLACEHOLDER_NAMES = frozenset({"市辖区", "县", "省直辖县级行政区划", "自治区直辖县级行政区划"})

# The 55 minority nationalities (plus 各族) as they appear inside autonomous-unit names; used to
# derive the common short names (黔南布依族苗族自治州 → 黔南, 管城回族区 → 管城区).
_ETHNIC_NAMES = (
    "蒙古",
    "回",
    "藏",
    "维吾尔",
    "苗",
    "彝",
    "壮",
    "布依",
    "朝鲜",
    "满",
    "侗",
    "瑶",
    "白",
    "土家",
    "哈尼",
    "哈萨克",
    "傣",
    "黎",
    "傈僳",
    "佤",
    "畲",
    "高山",
    "拉祜",
    "水",
    "东乡",
    "纳西",
    "景颇",
    "柯尔克孜",
    "土",
    "达斡尔",
    "仫佬",
    "羌",
    "布朗",
    "撒拉",
    "毛南",
    "仡佬",
    "锡伯",
    "阿昌",
    "普米",
    "塔吉克",
    "怒",
    "乌孜别克",
    "俄罗斯",
    "鄂温克",
    "德昂",
    "保安",
    "裕固",
    "京",
    "塔塔尔",
    "独龙",
    "鄂伦春",
    "赫哲",
    "门巴",
    "珞巴",
    "基诺",
    "各",
)
_ETHNIC_GROUPS = tuple(sorted(_ETHNIC_NAMES, key=len, reverse=True))


def level_of(adcode: str) -> str:
    """ "province" when the last four digits are 0, "city" when the last two are, else "county"."""
    if set(adcode[2:]) <= {"0"}:
        return "province"
    if set(adcode[4:]) <= {"0"}:
        return "city"
    return "county"


def _normalise_adcode(adcode: str | int) -> str:
    code = str(adcode).strip()
    if not code.isdigit() or len(code) > 12 or len(code) < 2:
        raise ValueError(f"adcode must be 2 to 12 digits, got {adcode!r}")
    return code.ljust(12, "0")


def _ethnic_at(text: str, i: int) -> str | None:
    for group in _ETHNIC_GROUPS:
        if text.startswith(group, i):
            # One-character names only count when written with 族 (回族, 白族, 水族 …).
            if len(group) == 1 and not text.startswith("族", i + 1):
                continue
            return group
    return None


def _strip_ethnic(base: str) -> str:
    """Drop the nationality part of an autonomous unit's name: 红河哈尼族彝族 → 红河."""
    for i in range(2, len(base)):
        if _ethnic_at(base, i):
            return base[:i]
    # The place is named after the nationality itself: 东乡族 → 东乡, 鄂温克族 → 鄂温克.
    group = _ethnic_at(base, 0)
    if group and base == group + "族":
        return group
    return base


def _name_forms(name: str, level: str) -> list[tuple[str, bool]]:
    """The forms a unit is written in, as ``(text, is_short)``; the official name first."""
    forms: list[tuple[str, bool]] = [(name, False)]
    if level == "province":
        short = name[:3] if name.startswith(("内蒙古", "黑龙江")) else name[:2]
        forms.append((short, True))
        return forms
    if "自治" in name:
        base, suffix = name.split("自治", 1)
        base = _strip_ethnic(base)
        if len(base) >= 2 and base != name:
            forms.append((base + suffix, False))  # 黔南州, 长阳县, 鄂温克旗
            forms.append((base, True))  # 黔南, 长阳
        return forms
    if name.endswith("区"):
        if "族" in name:
            base = _strip_ethnic(name[:-1])
            if len(base) >= 2:
                forms.append((base + "区", False))  # 管城回族区 → 管城区
        return forms  # no bare short form for districts: 鼓楼 is a street as often as not
    if level == "city" and name.endswith("地区") and len(name) >= 4:
        forms.append((name[:-2], True))
    elif name.endswith("盟") and len(name) >= 3:
        forms.append((name[:-1], True))
    elif name.endswith(("市", "县")) and len(name) >= 3:
        forms.append((name[:-1], True))  # 新乡市 → 新乡, 辉县市 → 辉县, 修武县 → 修武
    return forms


@dataclass(frozen=True, slots=True)
class _Unit:
    adcode: str
    name: str
    level: str
    lng: float | None
    lat: float | None
    province: str | None  # adcode of the province it belongs to (None for a province)
    city: str | None  # adcode of the (real, non-placeholder) city of a county
    full_name: str

    @property
    def ancestors(self) -> tuple[str, ...]:
        return tuple(a for a in (self.province, self.city) if a)

    def as_dict(self) -> dict[str, Any]:
        return {
            "adcode": self.adcode,
            "name": self.name,
            "level": self.level,
            "lng": self.lng,
            "lat": self.lat,
            "province_adcode": self.province,
            "city_adcode": self.city,
            "full_name": self.full_name,
        }


@dataclass(frozen=True, slots=True)
class _Match:
    start: int
    end: int
    adcode: str
    is_short: bool

    @property
    def length(self) -> int:
        return self.end - self.start


class _Gazetteer:
    """Read-only index over the adcode CSV; built once per file, shared between threads."""

    def __init__(self, path: Path) -> None:
        raw: dict[str, tuple[str, float | None, float | None]] = {}
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                code = row["adcode"].strip()
                lng = row["longitude"].strip()
                lat = row["latitude"].strip()
                raw[code] = (
                    row["name"].strip(),
                    float(lng) if lng else None,
                    float(lat) if lat else None,
                )

        def real(code: str) -> bool:
            return code in raw and raw[code][0] not in _PLACEHOLDER_NAMES

        self.units: dict[str, _Unit] = {}
        for code, (name, lng, lat) in raw.items():
            level = level_of(code)
            province = code[:2] + "0" * 10 if level != "province" else None
            city = code[:4] + "0" * 8 if level == "county" else None
            if province is not None and not real(province):
                province = None
            if city is not None and not real(city):
                city = None
            parts = [raw[a][0] for a in (province, city) if a]
            self.units[code] = _Unit(
                code, name, level, lng, lat, province, city, "".join([*parts, name])
            )

        # Name index over the real places that have a seat.
        self.names: dict[str, list[tuple[str, bool]]] = {}
        lengths: dict[str, set[int]] = {}
        for code, unit in self.units.items():
            if unit.name in _PLACEHOLDER_NAMES or unit.lng is None or unit.lat is None:
                continue
            for text, is_short in _name_forms(unit.name, unit.level):
                self.names.setdefault(text, []).append((code, is_short))
                lengths.setdefault(text[0], set()).add(len(text))
        self.lengths = {ch: tuple(sorted(ls, reverse=True)) for ch, ls in lengths.items()}

        counties = sorted(
            (u for u in self.units.values() if u.level == "county" and u.lng is not None),
            key=lambda u: u.adcode,
        )
        self.county_codes = [u.adcode for u in counties]
        self.county_lngs = np.array([u.lng for u in counties], dtype=np.float64)
        self.county_lats = np.array([u.lat for u in counties], dtype=np.float64)

    # -- matching ---------------------------------------------------------------------------

    def _find(self, text: str) -> list[_Match]:
        found: list[_Match] = []
        for i, ch in enumerate(text):
            for length in self.lengths.get(ch, ()):
                hits = self.names.get(text[i : i + length])
                if hits:
                    found.extend(_Match(i, i + length, code, short) for code, short in hits)
        return found

    def _is_ancestor(self, anc: str, code: str) -> bool:
        return anc in self.units[code].ancestors

    def _prune(self, found: list[_Match]) -> dict[str, _Match]:
        """Drop matches inside a longer one (新乡 inside 新乡市, 城区 inside 西城区), and the
        descendant of two units written identically (新乡: the city, not 新乡县); keep each
        unit's best remaining match."""
        kept: list[_Match] = []
        for m in found:
            shadowed = False
            for o in found:
                if o is m or o.start > m.start or o.end < m.end:
                    continue
                if o.length > m.length or (
                    o.length == m.length and self._is_ancestor(o.adcode, m.adcode)
                ):
                    shadowed = True
                    break
            if not shadowed:
                kept.append(m)
        best: dict[str, _Match] = {}
        for m in kept:
            cur = best.get(m.adcode)
            if cur is None or (m.is_short, m.start) < (cur.is_short, cur.start):
                best[m.adcode] = m
        return best

    def _rank(self, matched: dict[str, _Match]) -> list[tuple[tuple, _Match]]:
        ranked = []
        for code, m in matched.items():
            unit = self.units[code]
            rank = _LEVEL_RANK[unit.level]
            ancestors = unit.ancestors
            support = sum(1 for a in ancestors if a in matched)
            # A matched province/city that this unit is not in speaks against it.
            conflicts = sum(
                1
                for other in matched
                if other != code
                and _LEVEL_RANK[self.units[other].level] < rank
                and other not in ancestors
            )
            key = (support - conflicts, rank, not m.is_short, -m.start, m.length)
            ranked.append((key, m))
        ranked.sort(key=lambda km: km[0], reverse=True)
        return ranked

    def _common_ancestor(self, codes: list[str]) -> _Unit | None:
        for width, level in ((4, "city"), (2, "province")):
            prefixes = {c[:width] for c in codes}
            if len(prefixes) == 1:
                anc = self.units.get(prefixes.pop().ljust(12, "0"))
                if (
                    anc is not None
                    and anc.level == level
                    and anc.name not in _PLACEHOLDER_NAMES
                    and anc.lng is not None
                ):
                    return anc
        return None

    def search(self, text: str) -> tuple[list[tuple[_Unit, str]], _Unit | None, str | None]:
        """All candidates best first as (unit, matched text), plus the single answer (or None
        when the best candidates tie with no common province/city) and its matched text."""
        text = "".join(text.split())
        matched = self._prune(self._find(text))
        if not matched:
            return [], None, None
        ranked = self._rank(matched)
        candidates = [(self.units[m.adcode], text[m.start : m.end]) for _, m in ranked]
        top_key = ranked[0][0]
        tied = [m for key, m in ranked if key == top_key]
        if len(tied) == 1:
            return candidates, candidates[0][0], candidates[0][1]
        common = self._common_ancestor([m.adcode for m in tied])
        if common is None:
            return candidates, None, None
        text_of = matched.get(common.adcode)
        return candidates, common, (text[text_of.start : text_of.end] if text_of else None)

    def nearest_counties(self, lng: float, lat: float, k: int) -> list[tuple[_Unit, float]]:
        d = _haversine_to_many(lng, lat, self.county_lngs, self.county_lats)
        k = min(k, len(d))
        idx = np.argpartition(d, k - 1)[:k] if k < len(d) else np.arange(len(d))
        idx = idx[np.argsort(d[idx], kind="stable")]
        return [(self.units[self.county_codes[i]], float(d[i])) for i in idx]


_gazetteers: dict[Path, _Gazetteer] = {}
_gazetteer_lock = threading.Lock()


def _gazetteer(path: Path | str | None = None) -> _Gazetteer:
    key = Path(path).resolve() if path is not None else ADCODES_CSV
    gaz = _gazetteers.get(key)
    if gaz is None:
        with _gazetteer_lock:
            gaz = _gazetteers.get(key)
            if gaz is None:
                gaz = _gazetteers[key] = _Gazetteer(key)
    return gaz


def adcode_lookup(adcode: str | int) -> dict[str, Any] | None:
    """The unit with this adcode (6 or 12 digits; shorter codes are padded with zeros), as a
    dict with adcode (12 digits), name, level, lng, lat (None when the source has no seat),
    province_adcode, city_adcode and full_name; None when unknown."""
    unit = _gazetteer().units.get(_normalise_adcode(adcode))
    return unit.as_dict() if unit else None


def counties_of(prefix: str, *, require_coordinates: bool = True) -> list[dict[str, Any]]:
    """County-level units whose adcode starts with ``prefix`` (``"41"``: all of Henan,
    ``"4107"``: 新乡市), in adcode order, as :func:`adcode_lookup` dicts. Placeholders are never
    included; units without a seat only when ``require_coordinates`` is false."""
    prefix = str(prefix).strip()
    if not prefix.isdigit() or len(prefix) > 12:
        raise ValueError(f"prefix must be 1 to 12 digits, got {prefix!r}")
    gaz = _gazetteer()
    return [
        unit.as_dict()
        for code, unit in sorted(gaz.units.items())
        if code.startswith(prefix)
        and unit.level == "county"
        and unit.name not in _PLACEHOLDER_NAMES
        and (unit.lng is not None or not require_coordinates)
    ]


# --------------------------------------------------------------------------------------------
# Geocoders
# --------------------------------------------------------------------------------------------


def _location(unit: _Unit, **extra: Any) -> Location:
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
    def _gaz(self) -> _Gazetteer:
        return _gazetteer(self._path)

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
        _check_coord_type(declared)
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
