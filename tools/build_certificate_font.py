"""Build server/data/fonts/NotoSansSC-Certificate.ttf, the font certificates embed, from Noto
Sans SC (SIL Open Font License 1.1) as the PyPI package pylopdf-fonts-zh-cn ships it.

    .venv/bin/python tools/build_certificate_font.py [--source NotoSansSC-Regular.otf]

Without --source it runs `pip download` for the pinned package into a temporary directory
(the registry, not the internet). Not used by the service.

Two steps. A subset: printable ASCII, every character of GB 2312 (its 6,763 hanzi and 682
symbols, which cover nearly every name and place written in Simplified Chinese) and the CJK
and full-width punctuation; characters outside it fall back to the reader's own Song font when
a certificate is drawn (server/domain/certificates.py). Then the outlines converted from cubic
(CFF) to quadratic (TrueType) curves, because reportlab embeds only TrueType outlines.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from fontTools import subset
from fontTools.pens.cu2quPen import Cu2QuPen
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import TTFont, newTable

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pylopdf-fonts-zh-cn==0.1.1"
MEMBER = "pylopdf_fonts_zh_cn/NotoSansSC-Regular.otf"
OUTPUT = ROOT / "server" / "data" / "fonts" / "NotoSansSC-Certificate.ttf"
FAMILY = "Noto Sans SC Certificate"
# 1 font unit of error at 1000 units per em: invisible at any print size.
MAX_ERROR = 1.0
# maxp's TrueType fields; the hinting limits are nought, as the subset carries no hinting.
_MAXP_ZEROS = ("maxZones", "maxTwilightPoints", "maxStorage", "maxFunctionDefs",
               "maxInstructionDefs", "maxStackElements", "maxSizeOfInstructions",
               "maxComponentElements")  # fmt: skip


def characters() -> str:
    """ASCII, GB 2312 (every two-byte code it defines) and CJK punctuation."""
    chars = {chr(c) for c in range(0x20, 0x7F)}
    for high in range(0xA1, 0xF8):
        for low in range(0xA1, 0xFF):
            try:
                chars.add(bytes([high, low]).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    chars |= {chr(c) for c in range(0x3000, 0x3040)}  # CJK symbols and punctuation
    chars |= {chr(c) for c in range(0xFF01, 0xFF5F)}  # full-width forms
    chars |= set("·—…‘’“”•※℃№")
    return "".join(sorted(chars))


def _fetch_source(workdir: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(workdir), PACKAGE],
        check=True,
    )
    [wheel] = workdir.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(MEMBER, workdir)
    return workdir / MEMBER


def _subset(source: Path) -> TTFont:
    options = subset.Options()
    options.layout_features = []  # reportlab maps characters through cmap alone
    options.name_IDs = ["*"]
    options.notdef_outline = True
    options.hinting = False
    font = subset.load_font(str(source), options)
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=characters())
    subsetter.subset(font)
    return font


def _to_truetype(font: TTFont) -> None:
    """Replace the CFF table with glyf/loca (quadratic curves), as fontTools' otf2ttf does."""
    glyph_set = font.getGlyphSet()
    glyphs = {}
    for name in font.getGlyphOrder():
        pen = TTGlyphPen(glyph_set)
        glyph_set[name].draw(Cu2QuPen(pen, MAX_ERROR, reverse_direction=True))
        glyphs[name] = pen.glyph()
    font["loca"] = newTable("loca")
    font["glyf"] = glyf = newTable("glyf")
    glyf.glyphOrder = font.getGlyphOrder()
    glyf.glyphs = glyphs
    del font["CFF "]
    if "VORG" in font:
        del font["VORG"]
    font["maxp"] = maxp = newTable("maxp")
    maxp.tableVersion = 0x00010000
    for field in _MAXP_ZEROS:
        setattr(maxp, field, 0)
    maxp.maxZones = 1
    maxp.maxComponentDepth = 0
    font["head"].glyphDataFormat = 0
    font["post"].formatType = 2.0
    font["post"].extraNames = []
    font["post"].mapping = {}
    font.sfntVersion = "\x00\x01\x00\x00"
    font.recalcBBoxes = True  # the new glyphs have no bounds until compiled with them
    font.recalcTimestamp = False  # the same source gives the same file


def _rename(font: TTFont) -> None:
    """A modified version carries its own name (the OFL asks it of derivatives)."""
    names = {1: FAMILY, 4: f"{FAMILY} Regular", 6: "NotoSansSC-Certificate", 16: FAMILY}
    table = font["name"]
    for record in list(table.names):
        if record.nameID in names:
            where = (record.platformID, record.platEncID, record.langID)
            table.setName(names[record.nameID], record.nameID, *where)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="NotoSansSC-Regular.otf")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source or _fetch_source(Path(tmp))
        font = _subset(source)
        _to_truetype(font)
        _rename(font)
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        font.save(str(OUTPUT))
    print(f"{OUTPUT.relative_to(ROOT)}: {len(font.getGlyphOrder())} glyphs, "
          f"{OUTPUT.stat().st_size / 1e6:.1f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
