"""志愿服务记录证明: a PDF of a volunteer's confirmed hours with a verification code anyone can
check at /verify/{code}. Owns the `certificates` collection.

The code is the certificate's id with an HMAC: a forged or altered code fails the signature
before anything is looked up. Rendering runs in an executor (reportlab is CPU work).
"""

from __future__ import annotations

import base64
import binascii
import io
from datetime import datetime

import msgspec
from bson import ObjectId
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas

from server.clock import SHANGHAI
from server.domain import activities, hours, identity
from server.domain.errors import NotFound

_PURPOSE = "certificate"
_FONT = "STSong-Light"  # a CID font every PDF reader has: nothing to download or embed


class Verification(msgspec.Struct):
    code: str
    volunteer: str
    confirmed_hours: float
    records: int
    issuer: str
    issued_at: datetime


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
        raise NotFound("证明编号无效或已被篡改", code="invalid_code")
    return ObjectId(raw[:12])


def _masked_name(name: str | None) -> str:
    if not name:
        return "（未实名）"
    return name[0] + "*" * (len(name) - 1) if len(name) > 1 else name


async def issue(ctx, user_id: ObjectId) -> bytes:
    """Record the certificate and render it."""
    user = await identity.get_user(ctx, user_id)
    records = await hours.confirmed_credits(ctx, user_id)
    total = round(sum(r.hours for r in records), 2)
    titles = await activities.titles(
        ctx, [ObjectId(r.activity_id) for r in records if r.activity_id]
    )
    now = ctx.clock.now()
    certificate = {
        "_id": ObjectId(),
        "user_id": user_id,
        "real_name": user.get("real_name"),
        "confirmed_hours": total,
        "records": len(records),
        "issuer": ctx.settings.certificate_issuer,
        "issued_at": now,
    }
    await ctx.db["certificates"].insert_one(certificate)
    lines = [
        (
            r.credited_at.astimezone(SHANGHAI).strftime("%Y-%m-%d"),
            titles.get(ObjectId(r.activity_id), "科普大篷车随车服务")
            if r.activity_id
            else "科普服务",
            r.hours,
        )
        for r in records
    ]
    return await ctx.run_blocking(
        render_pdf,
        user.get("real_name") or "（未实名）",
        total,
        lines,
        ctx.settings.certificate_issuer,
        now.astimezone(SHANGHAI).strftime("%Y年%m月%d日"),
        _code(ctx, certificate["_id"]),
    )


def render_pdf(
    name: str,
    total: float,
    lines: list[tuple[str, str, float]],
    issuer: str,
    issued_on: str,
    code: str,
) -> bytes:
    if _FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(_FONT))
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4)
    pdf.setTitle("志愿服务记录证明")
    width, height = A4
    y = height - 30 * mm

    def text(x, size, value, center=False):
        pdf.setFont(_FONT, size)
        (pdf.drawCentredString if center else pdf.drawString)(x, y, value)

    text(width / 2, 20, "志愿服务记录证明", center=True)
    y -= 15 * mm
    text(25 * mm, 12, f"兹证明 {name} 参加志愿服务，经服务站点确认的服务时长合计 {total:g} 小时。")
    y -= 10 * mm
    text(25 * mm, 11, "日期")
    text(55 * mm, 11, "服务内容")
    text(160 * mm, 11, "时长（小时）")
    for day, title, value in lines:
        y -= 7 * mm
        if y < 40 * mm:
            pdf.showPage()
            y = height - 30 * mm
        text(25 * mm, 10, day)
        text(55 * mm, 10, title[:40])
        text(160 * mm, 10, f"{value:g}")
    y -= 15 * mm
    text(25 * mm, 11, f"出具单位：{issuer}")
    y -= 7 * mm
    text(25 * mm, 11, f"出具日期：{issued_on}")
    y -= 7 * mm
    text(25 * mm, 10, f"验证编号：{code}（可在 /verify/{code} 查验）")
    pdf.showPage()
    pdf.save()
    return out.getvalue()


async def verify(ctx, code: str) -> Verification:
    certificate_id = _certificate_id(ctx, code)
    doc = await ctx.db["certificates"].find_one({"_id": certificate_id})
    if doc is None:
        raise NotFound("证明不存在", code="invalid_code")
    return Verification(
        code=code,
        volunteer=_masked_name(doc.get("real_name")),
        confirmed_hours=doc["confirmed_hours"],
        records=doc["records"],
        issuer=doc["issuer"],
        issued_at=doc["issued_at"],
    )
