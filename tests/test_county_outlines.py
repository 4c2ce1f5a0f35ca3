"""The county outlines the console's maps draw (console/static/geo/henan.json) agree with the
gazetteer the planner uses: one outline per Henan county, named and coded alike, each county seat
inside its own county (or within a few hundred metres of its edge: the outlines are simplified),
and small enough to ship."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from server import geo

OUTLINES = Path(__file__).resolve().parents[1] / "console" / "static" / "geo" / "henan.json"
TOLERANCE_M = 300


def rings_of(geometry: dict) -> list[np.ndarray]:
    """Every ring (outer and holes) of a Polygon or MultiPolygon, as (n, 2) arrays."""
    polygons = (
        [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    )
    return [np.asarray(ring, dtype=float) for polygon in polygons for ring in polygon]


def inside(rings: list[np.ndarray], lng: float, lat: float) -> bool:
    """Even-odd rule over all rings: a point in a hole is outside, in an island inside."""
    crossings = 0
    for ring in rings:
        x0, y0 = ring[:-1, 0], ring[:-1, 1]
        x1, y1 = ring[1:, 0], ring[1:, 1]
        straddles = (y0 > lat) != (y1 > lat)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (lat - y0) * (x1 - x0) / (y1 - y0)
        crossings += int(np.count_nonzero(straddles & (x_at > lng)))
    return crossings % 2 == 1


def edge_distance_m(rings: list[np.ndarray], lng: float, lat: float) -> float:
    """Distance from the point to the nearest edge, on a local flat projection (metres)."""
    kx, ky = 111_320 * math.cos(math.radians(lat)), 110_574
    best = math.inf
    for ring in rings:
        a = (ring[:-1] - (lng, lat)) * (kx, ky)
        b = (ring[1:] - (lng, lat)) * (kx, ky)
        d = b - a
        length2 = np.einsum("ij,ij->i", d, d)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.clip(np.where(length2 > 0, -np.einsum("ij,ij->i", a, d) / length2, 0), 0, 1)
        nearest = a + d * t[:, None]
        best = min(best, float(np.sqrt(np.einsum("ij,ij->i", nearest, nearest).min())))
    return best


def test_point_in_polygon_and_edge_distance():
    square = {"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [2, 2], [0, 2], [0, 0]]]}
    hole = [[0.5, 0.5], [1.5, 0.5], [1.5, 1.5], [0.5, 1.5], [0.5, 0.5]]
    with_hole = {"type": "Polygon", "coordinates": [square["coordinates"][0], hole]}
    islands = {"type": "MultiPolygon", "coordinates": [square["coordinates"], [hole]]}
    assert inside(rings_of(square), 1, 1)
    assert not inside(rings_of(square), 3, 1)
    assert not inside(rings_of(with_hole), 1, 1)
    assert inside(rings_of(with_hole), 0.25, 1)
    assert not inside(rings_of(islands), 3, 3)
    assert edge_distance_m(rings_of(square), 1, 1) == pytest.approx(110_574, rel=1e-3)
    assert edge_distance_m(rings_of(square), 2.001, 1) == pytest.approx(111.3, rel=1e-2)


@pytest.fixture(scope="module")
def outlines() -> dict:
    return json.loads(OUTLINES.read_text(encoding="utf-8"))


def test_small_enough_to_ship():
    assert OUTLINES.stat().st_size < 500_000


def test_one_outline_per_county_named_as_the_gazetteer(outlines):
    codes = [f["properties"]["adcode"] for f in outlines["features"]]
    assert len(codes) == len(set(codes)) == 158
    assert set(codes) == {c["adcode"][:6] for c in geo.counties_of("41")}
    for feature in outlines["features"]:
        unit = geo.adcode_lookup(feature["properties"]["adcode"])
        assert feature["properties"]["name"] == unit["name"]
        assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")


def test_every_county_seat_lies_in_its_county(outlines):
    """The datum itself is checked when the file is built (the source's own seats coincide with
    the gazetteer's; see tools/build_county_outlines.py); here, that simplifying kept them in."""
    misplaced = []
    for feature in outlines["features"]:
        unit = geo.adcode_lookup(feature["properties"]["adcode"])
        rings = rings_of(feature["geometry"])
        if not inside(rings, unit["lng"], unit["lat"]):
            distance = edge_distance_m(rings, unit["lng"], unit["lat"])
            if distance > TOLERANCE_M:
                misplaced.append(f"{unit['name']}: {distance:.0f} m outside")
    assert not misplaced, misplaced


def test_outlines_cover_henan_and_no_more(outlines):
    points = np.concatenate([r for f in outlines["features"] for r in rings_of(f["geometry"])])
    (west, south), (east, north) = points.min(axis=0), points.max(axis=0)
    # Henan spans about 110.35–116.65 E and 31.38–36.37 N.
    assert 110.2 < west < 110.5 and 116.5 < east < 116.8
    assert 31.2 < south < 31.5 and 36.2 < north < 36.5
