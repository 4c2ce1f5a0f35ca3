"""Gazetteer: administrative units and their seats, from ``server/data/china_adcodes.csv``.

The CSV is read once per file, on first use, into a read-only index shared between threads:
units by adcode, the forms their names are written in (official and short), and the county
seats for nearest-seat lookups.
"""

from __future__ import annotations

import csv
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from server.geo.distance import haversine_to_many

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
ADCODES_CSV = DATA_DIR / "china_adcodes.csv"

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
class Unit:
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


class Gazetteer:
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

        self.units: dict[str, Unit] = {}
        for code, (name, lng, lat) in raw.items():
            level = level_of(code)
            province = code[:2] + "0" * 10 if level != "province" else None
            city = code[:4] + "0" * 8 if level == "county" else None
            if province is not None and not real(province):
                province = None
            if city is not None and not real(city):
                city = None
            parts = [raw[a][0] for a in (province, city) if a]
            self.units[code] = Unit(
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

    def _common_ancestor(self, codes: list[str]) -> Unit | None:
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

    def search(self, text: str) -> tuple[list[tuple[Unit, str]], Unit | None, str | None]:
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

    def nearest_counties(self, lng: float, lat: float, k: int) -> list[tuple[Unit, float]]:
        d = haversine_to_many(lng, lat, self.county_lngs, self.county_lats)
        k = min(k, len(d))
        idx = np.argpartition(d, k - 1)[:k] if k < len(d) else np.arange(len(d))
        idx = idx[np.argsort(d[idx], kind="stable")]
        return [(self.units[self.county_codes[i]], float(d[i])) for i in idx]


_gazetteers: dict[Path, Gazetteer] = {}
_gazetteer_lock = threading.Lock()


def gazetteer(path: Path | str | None = None) -> Gazetteer:
    key = Path(path).resolve() if path is not None else ADCODES_CSV
    gaz = _gazetteers.get(key)
    if gaz is None:
        with _gazetteer_lock:
            gaz = _gazetteers.get(key)
            if gaz is None:
                gaz = _gazetteers[key] = Gazetteer(key)
    return gaz


def adcode_lookup(adcode: str | int) -> dict[str, Any] | None:
    """The unit with this adcode (6 or 12 digits; shorter codes are padded with zeros), as a
    dict with adcode (12 digits), name, level, lng, lat (None when the source has no seat),
    province_adcode, city_adcode and full_name; None when unknown."""
    unit = gazetteer().units.get(_normalise_adcode(adcode))
    return unit.as_dict() if unit else None


def counties_of(prefix: str, *, require_coordinates: bool = True) -> list[dict[str, Any]]:
    """County-level units whose adcode starts with ``prefix`` (``"41"``: all of Henan,
    ``"4107"``: 新乡市), in adcode order, as :func:`adcode_lookup` dicts. Placeholders are never
    included; units without a seat only when ``require_coordinates`` is false."""
    prefix = str(prefix).strip()
    if not prefix.isdigit() or len(prefix) > 12:
        raise ValueError(f"prefix must be 1 to 12 digits, got {prefix!r}")
    gaz = gazetteer()
    return [
        unit.as_dict()
        for code, unit in sorted(gaz.units.items())
        if code.startswith(prefix)
        and unit.level == "county"
        and unit.name not in _PLACEHOLDER_NAMES
        and (unit.lng is not None or not require_coordinates)
    ]
