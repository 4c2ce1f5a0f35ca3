"""Coordinate systems, distances, GeoJSON points and geocoding.

Conventions (see ARCHITECTURE.md): every coordinate pair in this package is ``(lng, lat)`` in
degrees, and the database stores WGS-84. Clients may speak GCJ-02 (WeChat maps, Amap, Tencent)
or BD-09 (Baidu); :func:`to_wgs84` and :func:`from_wgs84` convert at the edges.

Plain Python: no tornado, no database.

Modules
-------
* :mod:`~server.geo.coords`: WGS-84 / GCJ-02 / BD-09 conversions (``COORD_TYPES``,
  :func:`to_wgs84`, :func:`from_wgs84` and the pairwise transforms) and validated GeoJSON
  points (:func:`geojson_point`, :func:`point_lnglat`).
* :mod:`~server.geo.distance`: geodesic and great-circle distances (:func:`distance_m`,
  :func:`distance_matrix_m`, the haversine to many points).
* :mod:`~server.geo.gazetteer`: the administrative units of ``server/data/china_adcodes.csv``,
  their name forms and seats (:func:`adcode_lookup`, :func:`counties_of`, :func:`level_of`).
* :mod:`~server.geo.geocoders`: geopy geocoders (:class:`CountySeatGeocoder`,
  :func:`make_geocoder`, ``GEOCODER_KINDS``, :func:`result_coord_type`) and :func:`geocode`.

Everything callers use is re-exported here: ``from server import geo; geo.to_wgs84(...)``.
"""

from server.geo.coords import (
    COORD_TYPES,
    bd09_to_gcj02,
    from_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    geojson_point,
    out_of_china,
    point_lnglat,
    to_wgs84,
    wgs84_point,
    wgs84_to_gcj02,
)
from server.geo.distance import EARTH_RADIUS_M, distance_m, distance_matrix_m
from server.geo.gazetteer import adcode_lookup, counties_of, level_of
from server.geo.geocoders import (
    GEOCODER_KINDS,
    CountySeatGeocoder,
    geocode,
    make_geocoder,
    result_coord_type,
)

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
    "wgs84_point",
    "wgs84_to_gcj02",
]
