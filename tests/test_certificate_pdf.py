"""The 志愿服务记录证明 anyone can check: an embedded font, what the certificate must carry, a QR
code and printed link to the public verification page, nothing off the page; /verify as a page
and as JSON, a reissue superseding the old code, a forged code refused."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
import segno
from bson import ObjectId
from pypdf import PdfReader
from reportlab.pdfbase import pdfmetrics

from server.domain import activities, certificates, hours, identity, orgs, sites

PUBLIC = "https://kepu.example.cn"
NUMBER = "11010519491231002X"  # the standard's own sample number


@pytest.fixture
def settings_overrides():
    return {
        "public_base_url": PUBLIC + "/",
        "certificate_person_in_charge": "周负责",
        "certificate_handler": "吴经办",
        "certificate_contact": "0371-65950000",
    }


@pytest.fixture
async def volunteer(ctx, http, login):
    """A volunteer with a name and ID number and 30 confirmed records of long-titled activities
    (enough for more than one page), plus one still pending."""
    root = await orgs.create_org(ctx, "河南省科学技术协会", "province", None)
    city = await orgs.create_org(ctx, "新乡市科协", "city", root)
    county = await orgs.create_org(ctx, "辉县市科协", "county", city)
    site = await sites.create_site(
        ctx,
        sites.NewSite(name="城关小学", kind="school", org_id=str(county),
                      location=sites.LocationIn(lng=113.806, lat=35.462)),
    )  # fmt: skip
    session = await login("o_certified")
    answer = await http.patch(
        "/mp/v1/me",
        json={"real_name": "欧阳明", "id_type": "resident_id", "id_number": NUMBER},
        headers=session.headers,
    )
    assert answer.status_code == 200, answer.text
    starts = ctx.clock.now() - timedelta(days=1)
    docs = [
        activities.activity_doc(
            ctx, title=f"科普进校园：青少年科技创新大赛辅导与科学实验秀巡回展示（第{n}期）",
            description="", org_id=county, site_id=site, starts_at=starts,
            ends_at=starts + timedelta(hours=2), capacity=30, created_by=None, status="published",
        )
        for n in range(31)
    ]  # fmt: skip
    await activities.import_activities(ctx, docs)
    user = ObjectId(session.user_id)
    credits = [
        await hours.credit(ctx, user_id=user, hours=1.5, org_id=county, site_id=site,
                           source="activity", activity_id=doc["_id"])
        for doc in docs
    ]  # fmt: skip
    await hours.confirm(ctx, None, [str(c) for c in credits[:30]])
    return session


async def certificate(http, session) -> tuple[bytes, PdfReader]:
    answer = await http.get("/mp/v1/me/certificate", headers=session.headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/pdf")
    return answer.content, PdfReader(io.BytesIO(answer.content))


def code_of(reader: PdfReader) -> str:
    text = reader.pages[0].extract_text()
    return text.split("证明编号：")[1].split()[0]


async def test_the_certificate_carries_what_a_record_certificate_must(ctx, http, volunteer):
    _, reader = await certificate(http, volunteer)
    assert len(reader.pages) >= 2
    # Lines wrap where the page ends them: the items are looked for in the text unwrapped.
    text = "".join(page.extract_text() for page in reader.pages).replace("\n", "")
    code = code_of(reader)
    for expected in (
        "志愿服务记录证明",
        "欧阳明",
        "居民身份证 1101**********002X",
        "累计 45 小时",  # 30 confirmed × 1.5; the pending record is not counted
        "第29期",
        "出具单位（盖章）：河南省科学技术协会",
        "负责人（签字）：周负责",
        "经办人（签字）：吴经办",
        "联系方式：0371-65950000",
        "出具日期：",
        f"{PUBLIC}/verify/{code}",
    ):
        assert expected in text, expected
    assert NUMBER not in text
    assert "第30期" not in text


async def test_the_font_is_embedded(http, volunteer):
    _, reader = await certificate(http, volunteer)
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            descendant = font["/DescendantFonts"][0].get_object() if "/DescendantFonts" in font \
                else font  # fmt: skip
            descriptor = descendant["/FontDescriptor"].get_object()
            assert "/FontFile2" in descriptor, font["/BaseFont"]  # an embedded TrueType subset


async def test_nothing_runs_off_the_page(http, volunteer):
    _, reader = await certificate(http, volunteer)
    certificates._register_fonts()
    seen = 0
    for page in reader.pages:
        box = page.mediabox
        pieces = []

        def visit(text, cm, tm, font, size, pieces=pieces):
            if text.strip():
                # The text matrix after the current transformation: where the line starts.
                x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
                y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
                pieces.append((text.strip(), x, y, size * tm[0] * cm[0]))

        page.extract_text(visitor_text=visit)
        for text, x, y, size in pieces:
            right = x + pdfmetrics.stringWidth(text, certificates.FONT, size)
            assert box.left <= x and right <= box.right, (text, x, right)
            assert box.bottom <= y <= box.top - size, (text, y)
            seen += 1
    assert seen > 60


async def test_the_qr_code_is_the_full_verification_url(http, volunteer):
    _, reader = await certificate(http, volunteer)
    code = code_of(reader)
    url = f"{PUBLIC}/verify/{code}"
    # The code's dark modules are drawn as filled squares of the last page: as many as segno
    # makes for that URL (a QR of another text would differ in count or size).
    dark = sum(sum(row) for row in segno.make(url, error="m").matrix)
    content = reader.pages[-1].get_contents().get_data().decode("latin-1")
    assert content.count(" re") >= dark


async def test_verify_answers_a_browser_and_a_program(ctx, http, volunteer):
    _, reader = await certificate(http, volunteer)
    code = code_of(reader)
    as_json = await http.get(f"/verify/{code}", headers={"Accept": "application/json"})
    assert as_json.status_code == 200
    body = as_json.json()
    assert (body["volunteer"], body["confirmed_hours"], body["records"]) == ("欧**", 45, 30)
    assert body["valid"] is True and body["status"] == "valid"
    assert body["issuer"] == "河南省科学技术协会"
    page = await http.get(f"/verify/{code}", headers={"Accept": "text/html,*/*;q=0.8"})
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    for expected in ("欧**", "45 小时", "河南省科学技术协会", "此证明有效", code):
        assert expected in page.text
    assert "欧阳明" not in page.text


async def test_a_reissued_certificate_supersedes_the_old_code(ctx, http, volunteer):
    _, first = await certificate(http, volunteer)
    _, second = await certificate(http, volunteer)
    old, new = code_of(first), code_of(second)
    assert old != new
    stale = (await http.get(f"/verify/{old}")).json()
    assert stale["valid"] is False and stale["status"] == "superseded" and stale["superseded_at"]
    assert (await http.get(f"/verify/{new}")).json()["valid"] is True
    page = await http.get(f"/verify/{old}", headers={"Accept": "text/html"})
    assert "不再有效" in page.text


async def test_a_forged_code_is_refused_and_changes_nothing(ctx, http, volunteer):
    _, reader = await certificate(http, volunteer)
    code = code_of(reader)
    before = await ctx.db.certificates.count_documents({})
    forged = code[:-1] + ("A" if code[-1] != "A" else "B")
    answer = await http.get(f"/verify/{forged}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "invalid_code"
    assert "篡改" in answer.json()["error"]["message"]
    page = await http.get(f"/verify/{forged}", headers={"Accept": "text/html"})
    assert page.status_code == 404 and "篡改" in page.text
    assert page.headers["Content-Type"].startswith("text/html")
    assert await ctx.db.certificates.count_documents({}) == before


async def test_a_name_outside_the_embedded_subset_still_prints(ctx, http, login):
    session = await login()
    user = ObjectId(session.user_id)
    await identity.update_profile(ctx, user, identity.ProfileChange(real_name="李䶮"))
    _, reader = await certificate(http, session)
    text = reader.pages[0].extract_text()
    # Drawn in two fonts, so extracted as two pieces: the rare one in the reader's Song font.
    assert "李" in text and "䶮" in text
    fonts = {f.get_object()["/BaseFont"] for f in reader.pages[0]["/Resources"]["/Font"].values()}
    assert "/STSong-Light" in {str(f).split("-UniGB")[0] for f in fonts}
