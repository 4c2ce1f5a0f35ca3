"""Records in the national systems' form: identity items on the profile (encrypted, validated,
masked), the two export workbooks with their held-back sheet and masking note, and the log of
exports, all through the HTTP API."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from bson import ObjectId
from openpyxl import load_workbook

from server.domain import access, activities, hours, identity, national_records, orgs, sites
from server.web import XLSX

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def resident_id(first17: str) -> str:
    """A resident ID with its right check digit (GB 11643, computed here independently)."""
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return first17 + "10X98765432"[total % 11]


def wrong_check_digit(number: str) -> str:
    return number[:17] + ("0" if number[17] != "0" else "1")


async def patch_me(http, session, body):
    return await http.patch("/mp/v1/me", json=body, headers=session.headers)


async def test_the_known_sample_number_is_valid():
    assert resident_id("11010519491231002") == "11010519491231002X"


async def test_an_id_number_is_stored_encrypted_and_answered_masked(ctx, http, login):
    me = await login()
    number = resident_id("41010219900307123")
    answer = await patch_me(http, me, {"real_name": "王五", "id_type": "resident_id",
                                       "id_number": number.lower()})  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id_type"] == "resident_id"
    assert body["id_number_masked"] == f"4101**********{number[-4:]}"
    assert body["gender"] == "male" and body["birth_date"] == "1990-03-07"
    assert number not in answer.text
    again = (await http.get("/mp/v1/me", headers=me.headers)).json()
    assert again["id_number_masked"] == body["id_number_masked"]
    stored = await ctx.db.users.find_one({"_id": ObjectId(me.user_id)})
    assert number not in str(stored)
    assert ctx.crypto.decrypt(stored["id_number"], "id_number") == number
    assert stored["id_hash"] == ctx.crypto.lookup_hash(number)


async def test_bad_identity_input_is_refused_in_chinese_and_changes_nothing(ctx, http, login):
    me = await login()
    good = resident_id("41072519850612002")  # a woman: the 17th digit is even
    wrong = await patch_me(
        http, me, {"id_type": "resident_id", "id_number": wrong_check_digit(good)}
    )
    assert wrong.status_code == 400
    assert wrong.json()["error"]["field"] == "id_number"
    assert "校验位" in wrong.json()["error"]["message"]
    half = await patch_me(http, me, {"id_type": "resident_id"})
    assert half.status_code == 400 and half.json()["error"]["field"] == "id_number"
    contradicts = await patch_me(
        http, me, {"id_type": "resident_id", "id_number": good, "gender": "male"}
    )
    assert contradicts.status_code == 400 and contradicts.json()["error"]["field"] == "gender"
    assert "不符" in contradicts.json()["error"]["message"]
    month_13 = resident_id("41072519851312002")
    bad_date = await patch_me(http, me, {"id_type": "resident_id", "id_number": month_13})
    assert bad_date.status_code == 400 and "出生日期" in bad_date.json()["error"]["message"]
    passport = await patch_me(http, me, {"id_type": "passport", "id_number": "E1234"})
    assert passport.status_code == 200  # five characters is a passport number's shortest
    bad_passport = await patch_me(http, me, {"id_type": "passport", "id_number": "E12-34567"})
    assert bad_passport.status_code == 400 and "格式" in bad_passport.json()["error"]["message"]
    stored = await ctx.db.users.find_one({"_id": ObjectId(me.user_id)})
    assert stored["id_type"] == "passport" and stored["id_masked"] == "E***4"


async def test_gender_and_birth_date_follow_the_number_or_are_given(ctx, http, login):
    me = await login()
    given = await patch_me(http, me, {"id_type": "passport", "id_number": "EA1234567",
                                      "gender": "female", "birth_date": "1999-09-09"})  # fmt: skip
    assert given.status_code == 200, given.text
    assert given.json()["id_number_masked"] == "EA12*4567"
    assert (given.json()["gender"], given.json()["birth_date"]) == ("female", "1999-09-09")
    derived = await patch_me(http, me, {"id_type": "resident_id",
                                        "id_number": resident_id("41072519850612002")})  # fmt: skip
    assert (derived.json()["gender"], derived.json()["birth_date"]) == ("female", "1985-06-12")
    refused = await patch_me(http, me, {"birth_date": "1986-01-01"})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "birth_date"
    future = await patch_me(http, me, {"id_type": "passport", "id_number": "EA1234567",
                                       "birth_date": "2999-01-01"})  # fmt: skip
    assert future.status_code == 400
    numbered = await patch_me(http, me, {"volunteer_number": "41000012345678"})
    assert numbered.json()["volunteer_number"] == "41000012345678"


async def test_one_id_number_belongs_to_one_account(ctx, http, login):
    first, second = await login(), await login()
    number = {"id_type": "resident_id", "id_number": resident_id("41010219900307123")}
    assert (await patch_me(http, first, number)).status_code == 200
    assert (await patch_me(http, first, number)).status_code == 200  # the same again
    taken = await patch_me(http, second, number)
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "id_number_taken"
    assert "id_hash" not in await ctx.db.users.find_one({"_id": ObjectId(second.user_id)})


# -- exports ----------------------------------------------------------------------------------


@pytest.fixture
async def records(ctx, login):
    """A county with a site and an activity; confirmed hours of two volunteers with identity
    items, of one without, a pending credit and a reversed one."""
    root = await orgs.create_org(ctx, "省科协", "province", None)
    city = await orgs.create_org(ctx, "新乡市科协", "city", root)
    county = await orgs.create_org(ctx, "辉县市科协", "county", city)
    other = await orgs.create_org(ctx, "安阳市科协", "city", root)
    site = await sites.create_site(
        ctx,
        sites.NewSite(name="城关小学", kind="school", org_id=str(county),
                      location=sites.LocationIn(lng=113.806, lat=35.462)),
    )  # fmt: skip
    starts = ctx.clock.now() - timedelta(hours=3)
    docs = [
        activities.activity_doc(
            ctx, title=f"科学实验秀{n}", description="小学科学实验", org_id=county,
            site_id=site, starts_at=starts, ends_at=starts + timedelta(hours=2), capacity=30,
            created_by=None, status="published",
        )
        for n in range(4)
    ]  # fmt: skip
    await activities.import_activities(ctx, docs)
    made = [doc["_id"] for doc in docs]
    people = {}
    for openid, name, number in (
        ("o_full_1", "王五", resident_id("41010219900307123")),
        ("o_full_2", "赵六", resident_id("41072519850612002")),
        ("o_no_id", "钱七", None),
    ):
        user = await identity.ensure_user(ctx, openid)
        change = identity.ProfileChange(real_name=name)
        if number:
            change = identity.ProfileChange(
                real_name=name,
                id_type="resident_id",
                id_number=number,
                volunteer_number="410000123",
            )
        await identity.update_profile(ctx, user, change)
        people[openid] = (user, number)

    async def credit(user, activity, amount):
        return await hours.credit(ctx, user_id=user, hours=amount, org_id=county, site_id=site,
                                  source="activity", activity_id=activity)  # fmt: skip

    confirmed = [
        await credit(people["o_full_1"][0], made[0], 2.0),
        await credit(people["o_full_2"][0], made[0], 1.5),
        await credit(people["o_no_id"][0], made[1], 3.0),
        await credit(people["o_full_1"][0], made[2], 1.0),  # reversed below
    ]
    await hours.confirm(ctx, None, [str(c) for c in confirmed])
    reversed_credit = await ctx.db.hours_ledger.find_one({"_id": confirmed[3]})
    await hours.correct(ctx, None, reversed_credit, hours.Adjustment(hours=0, reason="重复记录"))
    await credit(people["o_full_2"][0], made[3], 4.0)  # pending: never exported
    admin, organiser, outsider = await login(), await login(), await login()
    await access.grant_role(ctx, ObjectId(admin.user_id), "org_admin", city)
    await access.grant_role(ctx, ObjectId(organiser.user_id), "dispatcher", county)
    await access.grant_role(ctx, ObjectId(outsider.user_id), "org_admin", other)
    today = ctx.clock.local_now().date()
    return {
        "county": str(county), "city": str(city), "people": people,
        "admin": admin, "organiser": organiser, "outsider": outsider,
        "period": f"from={today - timedelta(days=1)}&to={today}",
    }  # fmt: skip


async def export(http, r, session, form, **extra):
    query = f"org_id={r['city']}&form={form}&{r['period']}"
    query += "".join(f"&{k}={v}" for k, v in extra.items())
    return await http.get(f"/api/v1/service-records/export?{query}", headers=session.headers)


def sheets(answer) -> dict[str, list[tuple]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith(XLSX)
    book = load_workbook(io.BytesIO(answer.content), read_only=True)
    return {ws.title: [tuple(row) for row in ws.iter_rows(values_only=True)] for ws in book}


@pytest.mark.parametrize("form", sorted(national_records.FORMS))
async def test_an_admin_exports_confirmed_records_in_the_declared_columns(http, records, form):
    declared = national_records.FORMS[form]
    book = sheets(await export(http, records, records["admin"], form))
    assert list(book) == [declared.sheet, "待补全", "说明"]
    header, *rows = book[declared.sheet]
    assert list(header) == [c.header for c in declared.columns]
    column = {c.item: i for i, c in enumerate(declared.columns)}
    by_name = {row[column["real_name"]]: row for row in rows}
    assert sorted(by_name) == ["王五", "赵六"]  # 钱七 held back; nothing pending or reversed
    wang = by_name["王五"]
    assert wang[column["id_number"]] == records["people"]["o_full_1"][1]
    assert wang[column["id_type"]] == "居民身份证"
    assert wang[column["hours"]] == 2.0 and by_name["赵六"][column["hours"]] == 1.5
    assert wang[column["project"]] == "科学实验秀0"
    assert wang[column["recorder"]] == "辉县市科协"
    assert "城关小学" in wang[column["place"]]
    _, *held = book["待补全"]
    assert len(held) == 1 and held[0][1] == "钱七" and held[0][5] == 3.0
    assert "证件号码" in held[0][6] and "证件类型" in held[0][6]
    notes = dict(book["说明"][1:])
    assert notes["证件号码"].startswith("完整")
    assert notes["记录数"] == "2" and notes["待补全记录数"].startswith("1")
    assert "民政部令第67号" in notes["列的来源"]


async def test_without_the_identity_permission_numbers_are_masked(http, records):
    form = national_records.FORMS["chinavolunteer"]
    number = records["people"]["o_full_1"][1]
    for session, extra in ((records["organiser"], {}), (records["admin"], {"masked": "true"})):
        if session is records["organiser"]:
            # The organiser holds records.export in the county only.
            refused = await export(http, records, session, "chinavolunteer")
            assert refused.status_code == 403
            answer = await http.get(
                f"/api/v1/service-records/export?org_id={records['county']}&form=chinavolunteer"
                f"&{records['period']}", headers=session.headers,
            )  # fmt: skip
        else:
            answer = await export(http, records, session, "chinavolunteer", **extra)
        book = sheets(answer)
        _, *rows = book[form.sheet]
        numbers = {row[2] for row in rows}
        assert number not in numbers
        assert f"{number[:4]}**********{number[-4:]}" in numbers
        assert dict(book["说明"][1:])["证件号码"].startswith("已脱敏")


async def test_every_export_is_logged_and_the_log_is_the_admins(http, records):
    first = await export(http, records, records["admin"], "cast")
    second = await export(http, records, records["admin"], "chinavolunteer", masked="true")
    log = await http.get(f"/api/v1/service-records/exports?org_id={records['city']}",
                         headers=records["admin"].headers)  # fmt: skip
    assert log.status_code == 200, log.text
    items = log.json()["items"]
    assert [i["id"] for i in items] == [second.headers["X-Export-Id"], first.headers["X-Export-Id"]]
    newest = items[0]
    assert newest["by"] == records["admin"].user_id and newest["org_name"] == "新乡市科协"
    assert (newest["form"], newest["identity"], newest["rows"], newest["held_back"]) == (
        "chinavolunteer",
        "masked",
        2,
        1,
    )
    assert items[1]["identity"] == "full" and newest["from"] <= newest["to"]
    refused = await http.get(
        "/api/v1/service-records/exports", headers=records["organiser"].headers
    )
    assert refused.status_code == 403
    theirs = await http.get("/api/v1/service-records/exports", headers=records["outsider"].headers)
    assert theirs.status_code == 200 and theirs.json()["items"] == []


async def test_bad_export_requests_are_refused(http, records):
    admin = records["admin"]
    for query, field in (
        (f"org_id={records['city']}&form=excel", "form"),
        (f"org_id={records['city']}&form=cast&from=2026-13-01", "from"),
        (f"org_id={records['city']}&form=cast&from=2026-05-01&to=2026-04-01", "to"),
    ):
        answer = await http.get(f"/api/v1/service-records/export?{query}", headers=admin.headers)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["field"] == field
    outside = await export(http, records, records["outsider"], "cast")
    assert outside.status_code == 403
