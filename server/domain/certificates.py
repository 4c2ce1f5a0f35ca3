"""志愿服务记录证明: a PDF of a volunteer's confirmed hours with a verification code anyone can
check at /verify/{code}, printed and as a QR code of the full URL. Owns the `certificates`
collection; a certificate issued again supersedes the user's earlier ones (their codes still
verify, as no longer valid).

What it carries follows 《关于规范志愿服务记录证明工作的指导意见》(民发〔2015〕149号): the
volunteer's identity (name, ID document masked, volunteer number), the service (summary,
hours), the issuer (name, 负责人, 经办人, contact), the number and the date.

The code is the certificate's id with an HMAC: a forged or altered code fails the signature
before anything is looked up. Rendering runs in an executor (reportlab is CPU work). The font
is embedded: a subset of Noto Sans SC (SIL OFL 1.1) in server/data/fonts, built by
tools/build_certificate_font.py; the rare character outside it falls back to the reader's own
Song font (STSong-Light, not embedded).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import threading
from datetime import datetime
from pathlib import Path
from typing import Literal

import msgspec
import segno
from bson import ObjectId
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from server.clock import SHANGHAI
from server.domain import activities, hours, id_documents, identity
from server.domain.errors import NotFound

_PURPOSE = "certificate"
FONT_FILE = Path(__file__).resolve().parents[1] / "data" / "fonts" / "NotoSansSC-Certificate.ttf"
FONT = "NotoSansSC-Certificate"
_FALLBACK = "STSong-Light"
_fonts_lock = threading.Lock()
# Wrapping keeps these together: numbers, dates, codes, links.
_TOKENS = re.compile(r"[0-9A-Za-z*._:/?=&%#+\-]+|\s+|.")
_CLOSING = frozenset("，。；：、）》”！？")

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 20 * mm
QR_SIZE = 32 * mm


class Verification(msgspec.Struct):
    code: str
    volunteer: str  # masked: 李*
    confirmed_hours: float
    records: int
    issuer: str
    issued_at: datetime
    valid: bool
    status: Literal["valid", "superseded"]
    superseded_at: datetime | None = None


class ServiceLine(msgspec.Struct, frozen=True):
    day: str
    title: str
    hours: float


class CertificateText(msgspec.Struct, frozen=True):
    """Everything a certificate prints, as text: what `render_pdf` lays out."""

    code: str
    url: str
    name: str
    id_line: str | None  # 居民身份证 4101**********1234；志愿者编号 …
    total: float
    lines: list[ServiceLine]
    first_day: str | None
    last_day: str | None
    issuer: str
    person_in_charge: str
    handler: str
    contact: str
    issued_on: str


def _code(ctx, certificate_id: ObjectId) -> str:
    raw = certificate_id.binary + ctx.crypto.sign(certificate_id.binary, _PURPOSE, length=10)
    return base64.b32encode(raw).decode().rstrip("=")


def _certificate_id(ctx, code: str) -> ObjectId:
    try:
        raw = base64.b32decode(code.upper() + "=" * (-len(code) % 8))
    except (binascii.Error, ValueError):
        raw = b""
    # Re-encoding must give the very same text: base32's spare bits cannot carry a change.
    if len(raw) != 22 or _code(ctx, ObjectId(raw[:12])) != code.upper():
        raise NotFound("证明编号无效或已被篡改，请核对证明上的编号", code="invalid_code")
    return ObjectId(raw[:12])


def verify_url(ctx, code: str) -> str:
    return f"{ctx.settings.public_url}/verify/{code}"


def _id_line(user: dict) -> str | None:
    parts = []
    if user.get("id_type") and user.get("id_masked"):
        parts.append(f"{id_documents.ID_TYPE_NAMES[user['id_type']]} {user['id_masked']}")
    if user.get("volunteer_number"):
        parts.append(f"志愿者编号 {user['volunteer_number']}")
    return "；".join(parts) or None


async def issue(ctx, user_id: ObjectId) -> bytes:
    """Record the certificate (superseding the user's earlier ones) and render it."""
    user = await identity.get_user(ctx, user_id)
    records = await hours.confirmed_credits(ctx, user_id)
    total = round(sum(r.hours for r in records), 2)
    titles = await activities.titles(
        ctx, [ObjectId(r.activity_id) for r in records if r.activity_id]
    )
    now = ctx.clock.now()
    settings = ctx.settings
    certificate = {
        "_id": ObjectId(),
        "user_id": user_id,
        "real_name": user.get("real_name"),
        "id_masked": user.get("id_masked"),
        "confirmed_hours": total,
        "records": len(records),
        "issuer": settings.certificate_issuer,
        "issued_at": now,
    }
    await ctx.db["certificates"].insert_one(certificate)
    await ctx.db["certificates"].update_many(
        {"user_id": user_id, "_id": {"$ne": certificate["_id"]}, "superseded_by": None},
        {"$set": {"superseded_by": certificate["_id"], "superseded_at": now}},
    )
    days = [r.credited_at.astimezone(SHANGHAI).strftime("%Y-%m-%d") for r in records]
    lines = [
        ServiceLine(
            day=day,
            title=titles.get(ObjectId(r.activity_id), "科普大篷车随车服务")
            if r.activity_id
            else "科普服务",
            hours=r.hours,
        )
        for day, r in zip(days, records, strict=True)
    ]
    code = _code(ctx, certificate["_id"])
    text = CertificateText(
        code=code,
        url=verify_url(ctx, code),
        name=user.get("real_name") or "（未实名）",
        id_line=_id_line(user),
        total=total,
        lines=lines,
        first_day=min(days) if days else None,
        last_day=max(days) if days else None,
        issuer=settings.certificate_issuer,
        person_in_charge=settings.certificate_person_in_charge,
        handler=settings.certificate_handler,
        contact=settings.certificate_contact,
        issued_on=now.astimezone(SHANGHAI).strftime("%Y年%m月%d日"),
    )
    return await ctx.run_blocking(render_pdf, text)


# -- rendering --------------------------------------------------------------------------------


def _register_fonts() -> TTFont:
    with _fonts_lock:
        if FONT not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(FONT, str(FONT_FILE)))
            pdfmetrics.registerFont(UnicodeCIDFont(_FALLBACK))
    return pdfmetrics.getFont(FONT)


class _Writer:
    """Text on the canvas in the embedded font, falling back per character where it has no
    glyph; widths measured the same way, so wrapping and alignment hold for both."""

    def __init__(self, pdf: canvas.Canvas, font: TTFont) -> None:
        self.pdf = pdf
        self.covered = font.face.charToGlyph

    def _runs(self, text: str) -> list[tuple[str, str]]:
        runs: list[tuple[str, str]] = []
        for ch in text:
            font = FONT if ord(ch) in self.covered or ch.isspace() else _FALLBACK
            if runs and runs[-1][0] == font:
                runs[-1] = (font, runs[-1][1] + ch)
            else:
                runs.append((font, ch))
        return runs

    def width(self, text: str, size: float) -> float:
        return sum(pdfmetrics.stringWidth(run, font, size) for font, run in self._runs(text))

    def draw(self, x: float, y: float, text: str, size: float, align: str = "left") -> None:
        if align == "center":
            x -= self.width(text, size) / 2
        elif align == "right":
            x -= self.width(text, size)
        for font, run in self._runs(text):
            self.pdf.setFont(font, size)
            self.pdf.drawString(x, y, run)
            x += pdfmetrics.stringWidth(run, font, size)

    def wrap(self, text: str, size: float, max_width: float) -> list[str]:
        """Lines no wider than `max_width`, broken between any two Chinese characters but not
        inside a number, date or code (unless it alone is too wide, as a long link may be); a
        line never starts with closing punctuation."""
        lines, line = [], ""
        for token in _TOKENS.findall(text):
            if not line or self.width(line + token, size) <= max_width or token in _CLOSING:
                line += token
                continue
            lines.append(line.rstrip())
            line = token.lstrip()
        lines.append(line)
        return [part for long in lines for part in self._split(long, size, max_width) if part]

    def _split(self, line: str, size: float, max_width: float) -> list[str]:
        parts, part = [], ""
        for ch in line:
            if part and self.width(part + ch, size) > max_width:
                parts.append(part)
                part = ""
            part += ch
        return [*parts, part]


def render_pdf(text: CertificateText) -> bytes:
    font = _register_fonts()
    out = io.BytesIO()
    # The initial font is ours too, or every page would name Helvetica, which no one embeds.
    pdf = canvas.Canvas(out, pagesize=A4, pageCompression=1, initialFontName=FONT)
    pdf.setTitle("志愿服务记录证明")
    pdf.setAuthor(text.issuer)
    writer = _Writer(pdf, font)
    left, right = MARGIN, PAGE_WIDTH - MARGIN
    width = right - left
    page = 1

    def footer() -> None:
        writer.draw(PAGE_WIDTH / 2, 12 * mm, f"证明编号 {text.code} · 第 {page} 页", 8, "center")

    def new_page() -> float:
        nonlocal page
        footer()
        pdf.showPage()
        page += 1
        return PAGE_HEIGHT - MARGIN - 5 * mm

    y = PAGE_HEIGHT - MARGIN - 8 * mm
    writer.draw(PAGE_WIDTH / 2, y, "志愿服务记录证明", 22, "center")
    y -= 10 * mm
    writer.draw(right, y, f"证明编号：{text.code}", 9, "right")
    y -= 10 * mm

    who = text.name + (f"（{text.id_line}）" if text.id_line else "")
    when = f"于 {text.first_day} 至 {text.last_day} 期间" if text.first_day else ""
    body = (
        f"兹证明 {who} {when}参加{text.issuer}组织的志愿服务活动 {len(text.lines)} 次，"
        f"经服务站点确认的志愿服务时长累计 {text.total:g} 小时。特此证明。"
    )
    for line in writer.wrap(body, 12, width):
        writer.draw(left, y, line, 12)
        y -= 7 * mm
    y -= 4 * mm

    columns = (left, left + 30 * mm, right)  # 日期 | 服务项目 | 时长 (right-aligned)
    title_width = right - 30 * mm - columns[1] - 4 * mm

    def table_head(y: float) -> float:
        writer.draw(columns[0], y, "服务日期", 10.5)
        writer.draw(columns[1], y, "服务项目", 10.5)
        writer.draw(columns[2], y, "时长（小时）", 10.5, "right")
        pdf.setLineWidth(0.5)
        pdf.line(left, y - 2 * mm, right, y - 2 * mm)
        return y - 7 * mm

    y = table_head(y)
    bottom = MARGIN + 10 * mm
    for line in text.lines:
        wrapped = writer.wrap(line.title, 10, title_width) or [""]
        if y - 5 * mm * (len(wrapped) - 1) < bottom:
            y = table_head(new_page())
        writer.draw(columns[0], y, line.day, 10)
        writer.draw(columns[2], y, f"{line.hours:g}", 10, "right")
        for part in wrapped:
            writer.draw(columns[1], y, part, 10)
            y -= 5 * mm
        y -= 1.5 * mm
    pdf.line(left, y + 3 * mm, right, y + 3 * mm)
    y -= 4 * mm
    writer.draw(columns[2], y, f"合计 {text.total:g} 小时", 10.5, "right")
    y -= 10 * mm

    # The issuer's block and the QR code beside it stay together on one page.
    block = 6 * 8 * mm
    if y - max(block, QR_SIZE + 12 * mm) < bottom:
        y = new_page()
    top = y
    signed = [
        f"出具单位（盖章）：{text.issuer}",
        f"负责人（签字）：{text.person_in_charge or '＿＿＿＿＿＿'}",
        f"经办人（签字）：{text.handler or '＿＿＿＿＿＿'}",
        f"联系方式：{text.contact or '＿＿＿＿＿＿＿＿＿＿'}",
        f"出具日期：{text.issued_on}",
    ]
    text_width = width - QR_SIZE - 8 * mm
    for entry in signed:
        for part in writer.wrap(entry, 11, text_width):
            writer.draw(left, y, part, 11)
            y -= 7 * mm
    _draw_qr(pdf, text.url, right - QR_SIZE, top - QR_SIZE + 4 * mm, QR_SIZE)
    writer.draw(right - QR_SIZE / 2, top - QR_SIZE, "扫码查验", 8, "center")
    y = min(y, top - QR_SIZE - 6 * mm) - 2 * mm
    for part in writer.wrap(f"查验：{text.url}（或输入证明编号查验）", 8.5, width):
        writer.draw(left, y, part, 8.5)
        y -= 5 * mm
    footer()
    pdf.showPage()
    pdf.save()
    return out.getvalue()


def _draw_qr(pdf: canvas.Canvas, url: str, x: float, y: float, size: float) -> None:
    """The QR code as vector squares (no image library): crisp at any print size."""
    matrix = segno.make(url, error="m").matrix
    module = size / len(matrix)
    pdf.setFillGray(0)
    for row_index, row in enumerate(matrix):
        for col_index, dark in enumerate(row):
            if dark:
                pdf.rect(x + col_index * module, y + size - (row_index + 1) * module,
                         module, module, stroke=0, fill=1)  # fmt: skip


# -- verification -----------------------------------------------------------------------------


async def verify(ctx, code: str) -> Verification:
    certificate_id = _certificate_id(ctx, code)
    doc = await ctx.db["certificates"].find_one({"_id": certificate_id})
    if doc is None:
        raise NotFound("证明不存在", code="invalid_code")
    superseded = doc.get("superseded_at")
    return Verification(
        code=code.upper(),
        volunteer=hours.masked_name(doc.get("real_name")),
        confirmed_hours=doc["confirmed_hours"],
        records=doc["records"],
        issuer=doc["issuer"],
        issued_at=doc["issued_at"],
        valid=superseded is None,
        status="superseded" if superseded else "valid",
        superseded_at=superseded,
    )
