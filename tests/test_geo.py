"""Tests for server.geo: coordinate systems, distances, GeoJSON, the gazetteer, geocoding."""

from __future__ import annotations

import asyncio
import csv
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from geopy.geocoders import BaiduV3
from geopy.location import Location
from hypothesis import given, settings
from hypothesis import strategies as st

from server import geo

DATA = Path(geo.__file__).resolve().parent.parent / "data"


def _read_csv(name: str) -> dict[str, tuple[str, float | None, float | None]]:
    with open(DATA / name, encoding="utf-8", newline="") as fh:
        return {
            row["adcode"]: (
                row["name"],
                float(row["longitude"]) if row["longitude"] else None,
                float(row["latitude"]) if row["latitude"] else None,
            )
            for row in csv.DictReader(fh)
        }


CHINA = _read_csv("china_adcodes.csv")
HENAN = _read_csv("henan_adcodes.csv")

# China's extent (mainland, Hainan, the South China Sea islands), inside the out_of_china box.
china_lng = st.floats(min_value=73.5, max_value=135.0)
china_lat = st.floats(min_value=3.9, max_value=53.5)
# Eastern and central China, where most people (and all of Henan) live.
east_lng = st.floats(min_value=105.0, max_value=123.0)
east_lat = st.floats(min_value=20.0, max_value=42.0)

# --------------------------------------------------------------------------------------------
# Coordinate systems
# --------------------------------------------------------------------------------------------

# Published examples. (wgs_lng, wgs_lat, gcj_lng, gcj_lat):
#  - googollee/eviltransform, python/test.py (Shanghai, Shenzhen, Beijing);
#  - wandergis/coordtransform, test/app.js, wgs84togcj02(116.404, 39.915).
WGS_GCJ_PAIRS = [
    (121.5272106, 31.1774276, 121.531541859215, 31.17530398364597),
    (113.912316, 22.543847, 113.9171764808363, 22.540796131694766),
    (116.377817, 39.911954, 116.38404722455657, 39.91334545536069),
    (116.404, 39.915, 116.41024449916938, 39.91640428150164),
]


@pytest.mark.parametrize(("wlng", "wlat", "glng", "glat"), WGS_GCJ_PAIRS)
def test_wgs84_to_gcj02_matches_published_values(wlng, wlat, glng, glat):
    lng, lat = geo.wgs84_to_gcj02(wlng, wlat)
    assert lng == pytest.approx(glng, abs=1e-9)
    assert lat == pytest.approx(glat, abs=1e-9)


@pytest.mark.parametrize(("wlng", "wlat", "glng", "glat"), WGS_GCJ_PAIRS)
def test_gcj02_to_wgs84_inverts_published_values(wlng, wlat, glng, glat):
    assert geo.distance_m(geo.gcj02_to_wgs84(glng, glat), (wlng, wlat)) < 0.01


def test_gcj02_to_wgs84_is_more_exact_than_the_one_step_formula():
    # coordtransform's one-step gcj02towgs84(116.404, 39.915) = (116.39775550083061,
    # 39.91359571849836): right to a few centimetres, while ours round-trips to well under 1 mm.
    w = geo.gcj02_to_wgs84(116.404, 39.915)
    assert geo.distance_m(w, (116.39775550083061, 39.91359571849836)) < 0.5
    assert geo.distance_m(geo.wgs84_to_gcj02(*w), (116.404, 39.915)) < 0.001


def test_bd09_matches_published_values():
    # wandergis/coordtransform test/app.js
    lng, lat = geo.gcj02_to_bd09(116.404, 39.915)
    assert lng == pytest.approx(116.41036949371029, abs=1e-9)
    assert lat == pytest.approx(39.92133699351021, abs=1e-9)
    # The published BD-09 → GCJ-02 is a one-step approximation; ours is refined, so agree to ~0.1 m.
    assert (
        geo.distance_m(geo.bd09_to_gcj02(116.404, 39.915), (116.39762729119315, 39.90865673957631))
        < 0.1
    )


@settings(max_examples=300, deadline=None)
@given(lng=china_lng, lat=china_lat)
def test_wgs_gcj_round_trip_under_half_a_metre(lng, lat):
    back = geo.gcj02_to_wgs84(*geo.wgs84_to_gcj02(lng, lat))
    assert geo.distance_m(back, (lng, lat)) < 0.5
    assert geo.distance_m(back, (lng, lat)) < 0.01  # in fact far better


@settings(max_examples=200, deadline=None)
@given(lng=china_lng, lat=china_lat)
def test_gcj_wgs_round_trip(lng, lat):
    back = geo.wgs84_to_gcj02(*geo.gcj02_to_wgs84(lng, lat))
    assert geo.distance_m(back, (lng, lat)) < 0.01


@settings(max_examples=200, deadline=None)
@given(lng=east_lng, lat=east_lat)
def test_gcj_offset_in_eastern_china_is_100_to_700_m(lng, lat):
    offset = geo.distance_m((lng, lat), geo.wgs84_to_gcj02(lng, lat))
    assert 100.0 < offset < 700.0


@settings(max_examples=200, deadline=None)
@given(lng=china_lng, lat=china_lat)
def test_gcj_offset_anywhere_in_china_is_nonzero_and_bounded(lng, lat):
    # The offset shrinks to ~20 m around 96.6°E 37°N (Qinghai) and reaches ~710 m in the far
    # north-east, so the 100–700 m band only holds in the east (test above).
    offset = geo.distance_m((lng, lat), geo.wgs84_to_gcj02(lng, lat))
    assert 10.0 < offset < 750.0


@settings(max_examples=200, deadline=None)
@given(
    lng=st.one_of(st.floats(-180.0, 72.0), st.floats(138.0, 180.0)),
    lat=st.floats(-90.0, 90.0),
)
def test_out_of_china_longitudes_are_unchanged(lng, lat):
    assert geo.out_of_china(lng, lat)
    assert geo.wgs84_to_gcj02(lng, lat) == (lng, lat)
    assert geo.gcj02_to_wgs84(lng, lat) == (lng, lat)
    assert geo.to_wgs84(lng, lat, "gcj02") == (lng, lat)


@pytest.mark.parametrize(
    ("lng", "lat"),
    [(2.3522, 48.8566), (139.6917, 35.6895), (-74.006, 40.7128), (100.5, 56.5), (110.0, 0.5)],
)
def test_known_foreign_points_are_unchanged(lng, lat):
    assert geo.wgs84_to_gcj02(lng, lat) == (lng, lat)
    assert geo.gcj02_to_wgs84(lng, lat) == (lng, lat)


@settings(max_examples=200, deadline=None)
@given(lng=china_lng, lat=china_lat)
def test_bd09_round_trips(lng, lat):
    assert geo.distance_m(geo.bd09_to_gcj02(*geo.gcj02_to_bd09(lng, lat)), (lng, lat)) < 0.01
    assert geo.distance_m(geo.gcj02_to_bd09(*geo.bd09_to_gcj02(lng, lat)), (lng, lat)) < 0.01
    # BD-09 is GCJ-02 shifted by a further ~1 km at most
    assert 100.0 < geo.distance_m(geo.gcj02_to_bd09(lng, lat), (lng, lat)) < 1500.0


@settings(max_examples=200, deadline=None)
@given(lng=china_lng, lat=china_lat, coord_type=st.sampled_from(geo.COORD_TYPES))
def test_to_wgs84_inverts_from_wgs84(lng, lat, coord_type):
    there = geo.from_wgs84(lng, lat, coord_type)
    assert geo.distance_m(geo.to_wgs84(*there, coord_type), (lng, lat)) < 0.01


def test_to_wgs84_dispatches_on_coord_type():
    g = (116.404, 39.915)
    assert geo.to_wgs84(*g, "wgs84") == g
    assert geo.to_wgs84(*g, "gcj02") == geo.gcj02_to_wgs84(*g)
    assert geo.to_wgs84(*g, "bd09") == geo.gcj02_to_wgs84(*geo.bd09_to_gcj02(*g))


@pytest.mark.parametrize("bad", ["WGS84", "bd09ll", "gcj-02", "", "mercator", None])
def test_to_wgs84_rejects_unknown_coord_types(bad):
    with pytest.raises(ValueError, match="coord_type"):
        geo.to_wgs84(116.4, 39.9, bad)
    with pytest.raises(ValueError, match="coord_type"):
        geo.from_wgs84(116.4, 39.9, bad)


# --------------------------------------------------------------------------------------------
# Distances
# --------------------------------------------------------------------------------------------

BEIJING = (116.4074, 39.9042)
SHANGHAI = (121.4737, 31.2304)


def test_distance_beijing_shanghai():
    assert geo.distance_m(BEIJING, SHANGHAI) == pytest.approx(1_067_000, rel=0.01)
    assert geo.distance_m(SHANGHAI, BEIJING) == pytest.approx(geo.distance_m(BEIJING, SHANGHAI))


def test_distance_is_geodesic_on_the_ellipsoid():
    # One degree of meridian at the equator on WGS-84 is 110,574.4 m (a sphere would give 111,195).
    assert geo.distance_m((0.0, 0.0), (0.0, 1.0)) == pytest.approx(110_574.4, abs=0.5)
    assert geo.distance_m(BEIJING, BEIJING) == 0.0


def _henan_seats() -> tuple[np.ndarray, np.ndarray]:
    counties = geo.counties_of("41")
    return (
        np.array([c["lng"] for c in counties]),
        np.array([c["lat"] for c in counties]),
    )


def test_distance_matrix_shape_symmetry_and_diagonal():
    lngs, lats = _henan_seats()
    d = geo.distance_matrix_m(lngs, lats)
    n = len(lngs)
    assert n > 150
    assert d.shape == (n, n)
    assert d.dtype == np.float64
    assert np.array_equal(d, d.T)
    assert np.all(np.diag(d) == 0.0)
    off = d[~np.eye(n, dtype=bool)]
    assert off.min() > 0.0  # distinct seats
    assert off.max() < 700_000  # Henan is ~600 km across


def test_distance_matrix_agrees_with_distance_m():
    lngs, lats = _henan_seats()
    d = geo.distance_matrix_m(lngs, lats)
    rng = np.random.default_rng(7)
    pairs = rng.integers(0, len(lngs), size=(300, 2))
    checked = 0
    for i, j in pairs:
        if i == j:
            continue
        exact = geo.distance_m((lngs[i], lats[i]), (lngs[j], lats[j]))
        assert d[i, j] == pytest.approx(exact, rel=0.005)
        checked += 1
    assert checked > 250
    # And across China
    pts = [BEIJING, SHANGHAI, (87.6168, 43.8256), (110.3312, 20.0311), (126.6424, 45.7567)]
    d = geo.distance_matrix_m([p[0] for p in pts], [p[1] for p in pts])
    for i, a in enumerate(pts):
        for j, b in enumerate(pts):
            if i != j:
                assert d[i, j] == pytest.approx(geo.distance_m(a, b), rel=0.005)


def test_distance_matrix_scales_to_a_thousand_points():
    rng = np.random.default_rng(3)
    lngs = rng.uniform(110.3, 116.7, 1000)
    lats = rng.uniform(31.4, 36.4, 1000)
    started = time.perf_counter()
    d = geo.distance_matrix_m(lngs, lats)
    elapsed = time.perf_counter() - started
    assert d.shape == (1000, 1000)
    assert np.array_equal(d, d.T)
    assert elapsed < 5.0


def test_distance_matrix_edge_cases_and_validation():
    assert geo.distance_matrix_m([], []).shape == (0, 0)
    assert geo.distance_matrix_m([113.0], [35.0]).tolist() == [[0.0]]
    with pytest.raises(ValueError, match="equal length"):
        geo.distance_matrix_m([113.0, 114.0], [35.0])
    with pytest.raises(ValueError, match="finite"):
        geo.distance_matrix_m([113.0, float("nan")], [35.0, 35.0])


# --------------------------------------------------------------------------------------------
# GeoJSON points
# --------------------------------------------------------------------------------------------


def test_geojson_point():
    assert geo.geojson_point(113.805468, 35.462312) == {
        "type": "Point",
        "coordinates": [113.805468, 35.462312],
    }
    p = geo.geojson_point(180, -90)
    assert p["coordinates"] == [180.0, -90.0]
    assert all(type(c) is float for c in p["coordinates"])
    assert geo.point_lnglat(geo.geojson_point(113.8, 35.4)) == (113.8, 35.4)


@pytest.mark.parametrize(
    ("lng", "lat", "message"),
    [
        (180.0001, 35.0, "longitude"),
        (-181, 35.0, "longitude"),
        (113.0, 90.5, "latitude"),
        (113.0, -91, "latitude"),
        (float("nan"), 35.0, "longitude"),
        (113.0, float("inf"), "latitude"),
        ("113", 35.0, "longitude"),
        (113.0, None, "latitude"),
        (True, 35.0, "longitude"),
    ],
)
def test_geojson_point_rejects_bad_coordinates(lng, lat, message):
    with pytest.raises(ValueError, match=message):
        geo.geojson_point(lng, lat)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {"type": "LineString", "coordinates": [113.0, 35.0]},
        {"type": "Point", "coordinates": [113.0]},
        {"type": "Point", "coordinates": [200.0, 35.0]},
    ],
)
def test_point_lnglat_rejects_bad_points(bad):
    with pytest.raises(ValueError):
        geo.point_lnglat(bad)


# --------------------------------------------------------------------------------------------
# Data files, adcode lookup
# --------------------------------------------------------------------------------------------


def test_data_files_are_consistent():
    assert len(CHINA) == 3511
    assert len(HENAN) == 195
    assert {k: v for k, v in CHINA.items() if k.startswith("41")} == HENAN
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert "cpca" in readme and "0.5.5" in readme and "MIT" in readme


def test_adcode_lookup():
    unit = geo.adcode_lookup("410782")
    assert unit == geo.adcode_lookup("410782000000") == geo.adcode_lookup(410782)
    assert unit["adcode"] == "410782000000"
    assert unit["name"] == "辉县市"
    assert unit["level"] == "county"
    assert (unit["lng"], unit["lat"]) == CHINA["410782000000"][1:]
    assert unit["city_adcode"] == "410700000000"
    assert unit["province_adcode"] == "410000000000"
    assert unit["full_name"] == "河南省新乡市辉县市"
    assert geo.adcode_lookup("410700")["level"] == "city"
    assert geo.adcode_lookup("41")["level"] == "province"
    assert geo.adcode_lookup("110101")["full_name"] == "北京市东城区"
    assert geo.adcode_lookup("419001")["full_name"] == "河南省济源市"
    assert geo.adcode_lookup("999999") is None
    with pytest.raises(ValueError):
        geo.adcode_lookup("41x")


def test_adcode_lookup_returns_copies():
    geo.adcode_lookup("410782")["name"] = "changed"
    assert geo.adcode_lookup("410782")["name"] == "辉县市"


def test_counties_of_henan():
    counties = geo.counties_of("41")
    expected = sorted(
        code
        for code, (name, lng, _) in HENAN.items()
        if geo.level_of(code) == "county" and name != "市辖区" and lng is not None
    )
    assert [c["adcode"] for c in counties] == expected
    assert len(counties) > 150
    assert all(c["level"] == "county" and c["lng"] is not None for c in counties)
    by_name = {c["name"]: c for c in counties}
    for name in ("辉县市", "林州市", "卫辉市", "修武县", "济源市"):
        assert name in by_name
    assert "市辖区" not in by_name
    assert "金明区" not in by_name  # no seat in the source
    assert "金明区" in {c["name"] for c in geo.counties_of("41", require_coordinates=False)}
    xinxiang = geo.counties_of("4107")
    assert {c["name"] for c in xinxiang} >= {"辉县市", "卫辉市", "新乡县", "红旗区"}
    assert all(c["city_adcode"] == "410700000000" for c in xinxiang)
    with pytest.raises(ValueError):
        geo.counties_of("henan")


def test_level_of():
    assert geo.level_of("410000000000") == "province"
    assert geo.level_of("410700000000") == "city"
    assert geo.level_of("410782000000") == "county"


# --------------------------------------------------------------------------------------------
# Gazetteer geocoder
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gazetteer() -> geo.CountySeatGeocoder:
    return geo.CountySeatGeocoder()


@pytest.mark.parametrize(
    ("query", "adcode", "name"),
    [
        ("河南省新乡市辉县市城关街道", "410782000000", "辉县市"),
        ("河南省安阳市林州市红旗渠大道1号", "410581000000", "林州市"),
        ("河南省新乡市卫辉市", "410781000000", "卫辉市"),
        ("河南省焦作市修武县云台山镇", "410821000000", "修武县"),
        ("卫辉市", "410781000000", "卫辉市"),
    ],
)
def test_gazetteer_finds_county_seats(gazetteer, query, adcode, name):
    loc = gazetteer.geocode(query)
    assert isinstance(loc, Location)
    assert loc.address == name
    assert loc.raw["adcode"] == adcode
    assert loc.raw["level"] == "county"
    csv_lng, csv_lat = CHINA[adcode][1:]
    assert geo.distance_m((loc.longitude, loc.latitude), (csv_lng, csv_lat)) < 1.0


@pytest.mark.parametrize(
    ("query", "adcode"),
    [
        ("辉县", "410782000000"),
        ("林州", "410581000000"),
        ("河南新乡辉县", "410782000000"),
        ("新乡辉县城关街道", "410782000000"),
        ("焦作修武", "410821000000"),
        ("郑州市管城区", "410104000000"),  # official name 管城回族区
        ("长垣市", "410728000000"),  # renamed from 长垣县 after the data was made
        ("青海省河南县", "632324000000"),  # 河南蒙古族自治县, not 河南省
    ],
)
def test_gazetteer_short_forms(gazetteer, query, adcode):
    assert gazetteer.geocode(query).raw["adcode"] == adcode


@pytest.mark.parametrize(
    ("query", "adcode", "level"),
    [
        ("新乡", "410700000000", "city"),  # the city, not 新乡县
        ("河南新乡", "410700000000", "city"),
        ("河南省新乡市", "410700000000", "city"),
        ("新乡县七里营镇", "410721000000", "county"),
        ("河南省", "410000000000", "province"),
        ("河南", "410000000000", "province"),  # not 河南(蒙古族自治)县
        ("河南省新乡市辉县市", "410782000000", "county"),
    ],
)
def test_gazetteer_prefers_the_most_specific_level(gazetteer, query, adcode, level):
    loc = gazetteer.geocode(query)
    assert (loc.raw["adcode"], loc.raw["level"]) == (adcode, level)


def test_duplicated_county_names_are_in_the_data():
    gulou = {code for code, (name, _, _) in CHINA.items() if name == "鼓楼区"}
    assert len(gulou) >= 3
    assert len({code[:2] for code in gulou}) >= 3  # in several provinces


@pytest.mark.parametrize(
    ("query", "adcode"),
    [
        ("江苏省南京市鼓楼区中山路", "320106000000"),
        ("江苏省徐州市鼓楼区", "320302000000"),
        ("河南省开封市鼓楼区", "410204000000"),
        ("河南省鼓楼区", "410204000000"),  # the province alone settles it
        ("福建鼓楼区", "350102000000"),
        ("南京鼓楼区", "320106000000"),
        ("北京市朝阳区建国路", "110105000000"),
        ("吉林省长春市朝阳区", "220104000000"),
        ("河北省沧州市新华区", "130902000000"),
        ("平顶山市新华区", "410402000000"),
    ],
)
def test_gazetteer_disambiguates_by_province_and_city(gazetteer, query, adcode):
    loc = gazetteer.geocode(query)
    assert loc.raw["adcode"] == adcode
    assert (loc.longitude, loc.latitude) == CHINA[adcode][1:]


def test_gazetteer_ambiguous_names(gazetteer):
    # Four 鼓楼区 and nothing to choose between them.
    assert gazetteer.geocode("鼓楼区") is None
    every = gazetteer.geocode("鼓楼区", exactly_one=False)
    assert {loc.raw["adcode"] for loc in every} == {
        "320106000000",
        "320302000000",
        "350102000000",
        "410204000000",
    }
    # Two in Jiangsu: the answer is what is certain, the province.
    loc = gazetteer.geocode("江苏省鼓楼区")
    assert (loc.raw["adcode"], loc.raw["level"]) == ("320000000000", "province")
    # A county that contradicts the city named: keep the city.
    assert gazetteer.geocode("河南省新乡市鼓楼区").raw["adcode"] == "410700000000"


def test_gazetteer_substring_names_do_not_leak(gazetteer):
    # 城区 (a district of several Shanxi cities) is inside 西城区; 新乡 inside 新乡市.
    assert gazetteer.geocode("北京市西城区").raw["adcode"] == "110102000000"
    assert gazetteer.geocode("新乡市红旗区平原路").raw["adcode"] == "410702000000"


@pytest.mark.parametrize("query", ["随便写点什么", "hello world", "", "   ", "12345", "火星基地"])
def test_gazetteer_nonsense_is_none(gazetteer, query):
    assert gazetteer.geocode(query) is None
    assert gazetteer.geocode(query, exactly_one=False) is None


def test_gazetteer_rejects_non_strings(gazetteer):
    with pytest.raises(TypeError):
        gazetteer.geocode(None)


def test_gazetteer_reverse(gazetteer):
    hui_lng, hui_lat = CHINA["410782000000"][1:]
    loc = gazetteer.reverse((hui_lat + 0.01, hui_lng - 0.01))
    assert loc.raw["adcode"] == "410782000000"
    assert 1000 < loc.raw["distance_m"] < 2000
    several = gazetteer.reverse(f"{hui_lat}, {hui_lng}", exactly_one=False)
    assert several[0].raw["adcode"] == "410782000000"
    assert several[0].raw["distance_m"] == pytest.approx(0.0, abs=1e-6)
    dists = [loc.raw["distance_m"] for loc in several]
    assert dists == sorted(dists) and len(dists) == 10
    assert gazetteer.reverse((48.8566, 2.3522)) is None  # Paris


def test_gazetteer_loads_once():
    assert geo.gazetteer.gazetteer() is geo.gazetteer.gazetteer()
    a, b = geo.CountySeatGeocoder(), geo.CountySeatGeocoder()
    assert a._gaz is b._gaz


# --------------------------------------------------------------------------------------------
# make_geocoder and the async wrapper
# --------------------------------------------------------------------------------------------


def test_make_geocoder():
    assert isinstance(geo.make_geocoder("gazetteer", None, 5.0), geo.CountySeatGeocoder)
    baidu = geo.make_geocoder("baidu", "test-ak", 3.0)
    assert isinstance(baidu, BaiduV3)
    assert baidu.api_key == "test-ak"
    assert baidu.timeout == 3.0
    assert geo.result_coord_type(baidu) == "bd09"
    assert geo.result_coord_type(geo.make_geocoder("gazetteer", None, 1.0)) == "wgs84"
    with pytest.raises(ValueError, match="key"):
        geo.make_geocoder("baidu", None, 3.0)
    with pytest.raises(ValueError, match="key"):
        geo.make_geocoder("baidu", "", 3.0)
    with pytest.raises(ValueError, match="kind"):
        geo.make_geocoder("google", "x", 3.0)


class _RecordingGazetteer(geo.CountySeatGeocoder):
    """Records the thread each call ran on, and can be made slow."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.threads: list[int] = []

    def geocode(self, query, *, exactly_one=True, timeout=None):
        self.threads.append(threading.get_ident())
        if self.delay:
            time.sleep(self.delay)
        return super().geocode(query, exactly_one=exactly_one)


async def test_geocode_runs_in_an_executor():
    gaz = _RecordingGazetteer()
    loop_thread = threading.get_ident()
    with ThreadPoolExecutor(max_workers=2) as pool:
        result = await geo.geocode(gaz, "河南省新乡市辉县市城关街道", pool)
    assert result == CHINA["410782000000"][1:]
    assert len(gaz.threads) == 1 and gaz.threads[0] != loop_thread
    # The default executor works too.
    assert await geo.geocode(gaz, "林州") == CHINA["410581000000"][1:]
    assert gaz.threads[1] != loop_thread
    assert await geo.geocode(gaz, "随便写点什么") is None
    assert await geo.geocode(gaz, "  ") is None
    assert len(gaz.threads) == 3  # a blank address never reaches the geocoder


async def test_geocode_does_not_block_the_event_loop():
    gaz = _RecordingGazetteer(delay=0.3)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        result = await geo.geocode(gaz, "卫辉市")
    finally:
        task.cancel()
    assert result == CHINA["410781000000"][1:]
    assert ticks >= 10  # the loop kept running while the geocoder slept


class _FakeBaidu(BaiduV3):
    """BaiduV3 without the network: answers with a fixed BD-09 point, as Baidu does."""

    def __init__(self, bd_lng: float, bd_lat: float) -> None:
        super().__init__(api_key="fake")
        self.point = (bd_lat, bd_lng)

    def geocode(self, query, *, exactly_one=True, timeout=None):
        return Location(query, self.point, {"location": {"lng": self.point[1]}})


async def test_geocode_converts_baidu_results_to_wgs84():
    wgs = CHINA["410782000000"][1:]
    bd = geo.from_wgs84(*wgs, "bd09")
    assert geo.distance_m(bd, wgs) > 500  # BD-09 is far off WGS-84 …
    result = await geo.geocode(_FakeBaidu(*bd), "河南省新乡市辉县市")
    assert geo.distance_m(result, wgs) < 0.01  # … and is converted back
