"""Identity documents on a volunteer's profile: what a service record of the national systems
needs (证件类型 and 证件号码, 性别, 出生日期, the 志愿者编号 of 中国志愿服务网).

The number is validated (an 18-digit GB 11643 number's check digit and birth date), kept
encrypted like the phone, with a keyed hash to find it by (one number, one account) and a
masked copy to show; only `service_identities` reads it back, for a privileged export.
Gender and birth date follow from an 18-digit number, else the volunteer gives them.

Reads the `users` collection (server/domain/identity.py owns it and writes what `changes`
gives); owns no collection.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

import msgspec
from bson import ObjectId

from server.crypto import mask_id_number
from server.domain.errors import Conflict, InvalidRequest
from server.domain.text import line, whole

# 证件类型 as the national volunteer systems list them.
IdType = Literal[
    "resident_id",  # 居民身份证
    "residence_permit",  # 港澳台居民居住证
    "hk_macao_permit",  # 港澳居民来往内地通行证
    "taiwan_permit",  # 台湾居民来往大陆通行证
    "passport",  # 护照
    "foreign_permanent_residence",  # 外国人永久居留身份证
]
ID_TYPE_NAMES: dict[str, str] = {
    "resident_id": "居民身份证",
    "residence_permit": "港澳台居民居住证",
    "hk_macao_permit": "港澳居民来往内地通行证",
    "taiwan_permit": "台湾居民来往大陆通行证",
    "passport": "护照",
    "foreign_permanent_residence": "外国人永久居留身份证",
}
Gender = Literal["male", "female"]
VolunteerNumber = Annotated[str, msgspec.Meta(pattern=whole(r"[0-9A-Za-z-]{4,32}"))]
GENDER_NAMES: dict[str, str] = {"male": "男", "female": "女"}

_FORMATS: dict[str, re.Pattern] = {
    "resident_id": re.compile(r"^\d{17}[\dX]$"),
    "residence_permit": re.compile(r"^8[123]\d{15}[\dX]$"),
    "hk_macao_permit": re.compile(r"^[HM]\d{8,10}$"),
    "taiwan_permit": re.compile(r"^\d{8}(\d{2})?$"),
    "passport": re.compile(r"^[A-Z0-9]{5,17}$"),
    # The 2017 card (three letters, twelve digits) and the 2023 one (18 digits from 9).
    "foreign_permanent_residence": re.compile(r"^([A-Z]{3}\d{12}|9\d{16}[\dX])$"),
}
# GB 11643-1999 numbers (the residence permit's too): six digits of region, eight of birth
# date, three of sequence (odd for men), and ISO 7064 MOD 11-2 over those 17 gives the 18th.
_GB11643 = frozenset({"resident_id", "residence_permit"})
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_PERSON = ("gender", "birth_date")


class Documented(msgspec.Struct, kw_only=True):
    """The profile's identity items as answered: the number only ever masked."""

    id_type: IdType | None = None
    id_number_masked: str | None = None
    gender: Gender | None = None
    birth_date: date | None = None
    volunteer_number: str | None = None  # 志愿者编号 of 中国志愿服务网, once they have one


class Change(msgspec.Struct, kw_only=True):
    """证件类型 and 证件号码 come together; 性别 and 出生日期 follow from an 18-digit number."""

    id_type: IdType | None = None
    id_number: line(20, 5) | None = None
    gender: Gender | None = None
    birth_date: date | None = None
    volunteer_number: VolunteerNumber | None = None


class ServiceIdentity(msgspec.Struct):
    """The identity items of a service record: the number in full or masked, as asked."""

    real_name: str | None
    id_type: str | None
    id_number: str | None
    gender: str | None
    birth_date: date | None
    volunteer_number: str | None


def profile_fields(user: dict) -> dict:
    """`Documented`'s fields of a stored user."""
    return {
        "id_type": user.get("id_type"),
        "id_number_masked": user.get("id_masked"),
        "gender": user.get("gender"),
        "birth_date": _birth_date(user),
        "volunteer_number": user.get("volunteer_number"),
    }


def _birth_date(user: dict) -> date | None:
    # A calendar date, not a moment: stored as its ISO text, which no time zone can shift.
    return date.fromisoformat(user["birth_date"]) if user.get("birth_date") else None


def _check_digit_ok(number: str) -> bool:
    total = sum(int(d) * w for d, w in zip(number[:17], _WEIGHTS, strict=True))
    return _CHECK[total % 11] == number[17]


def read_number(id_type: str, raw: str, today: date) -> tuple[str, dict]:
    """The number as stored (upper case, no spaces) and what it says of its holder (gender and
    birth date, for GB 11643 numbers); InvalidRequest naming `id_number` otherwise."""
    number = re.sub(r"\s", "", raw).upper()
    if not _FORMATS[id_type].match(number):
        raise InvalidRequest(f"证件号码格式不正确（{ID_TYPE_NAMES[id_type]}）", field="id_number")
    if id_type not in _GB11643:
        return number, {}
    if not _check_digit_ok(number):
        raise InvalidRequest("证件号码校验位不正确，请核对后重新填写", field="id_number")
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidRequest("证件号码中的出生日期无效", field="id_number") from None
    if not date(1900, 1, 1) <= born <= today:
        raise InvalidRequest("证件号码中的出生日期无效", field="id_number")
    return number, {"gender": "male" if int(number[16]) % 2 else "female", "birth_date": born}


async def changes(ctx, user_id: ObjectId, fields: dict) -> dict:
    """The stored form of the identity items among a profile change's `fields` (taken out of
    it): the number encrypted, hashed and masked; gender and birth date from the number where
    it carries them. Nothing is written here."""
    id_type, raw = fields.pop("id_type", None), fields.pop("id_number", None)
    given = {k: fields.pop(k) for k in _PERSON if k in fields}
    if id_type is None and raw is None and not given:
        return {}
    if (id_type is None) != (raw is None):
        missing = "id_number" if raw is None else "id_type"
        raise InvalidRequest("证件类型和证件号码须一并填写", field=missing)
    today = ctx.clock.local_now().date()
    if "birth_date" in given and given["birth_date"] > today:
        raise InvalidRequest("出生日期不能晚于今天", field="birth_date")
    if id_type is None:
        user = await ctx.db["users"].find_one({"_id": user_id}, {"id_derived": 1}) or {}
        if user.get("id_derived"):
            raise InvalidRequest(
                "性别和出生日期由证件号码确定，不能单独修改", field=next(iter(given))
            )
        return _stored_person(given)
    number, derived = read_number(id_type, raw, today)
    for name, value in given.items():
        if name in derived and derived[name] != value:
            label = "性别" if name == "gender" else "出生日期"
            raise InvalidRequest(f"{label}与证件号码不符", field=name)
    digest = ctx.crypto.lookup_hash(number)
    holder = await ctx.db["users"].find_one({"id_hash": digest}, {"_id": 1})
    if holder is not None and holder["_id"] != user_id:
        raise Conflict("该证件号码已被其他账号登记，如有疑问请联系管理员", code="id_number_taken",
                       field="id_number")  # fmt: skip
    return {
        "id_type": id_type,
        "id_number": ctx.crypto.encrypt(number, "id_number"),
        "id_hash": digest,
        "id_masked": mask_id_number(number),
        "id_derived": bool(derived),
        **_stored_person({**given, **derived}),
    }


def _stored_person(values: dict) -> dict:
    if "birth_date" in values:
        values = {**values, "birth_date": values["birth_date"].isoformat()}
    return values


async def service_identities(
    ctx, user_ids: list[ObjectId], *, reveal: bool
) -> dict[ObjectId, ServiceIdentity]:
    """What a service record needs of each user; the document number decrypted only when
    `reveal` (a privileged export), else masked."""
    fields = {f: 1 for f in ("real_name", "id_type", "id_masked", *_PERSON, "volunteer_number",
                             *(["id_number"] if reveal else []))}  # fmt: skip
    found = {}
    async for user in ctx.db["users"].find({"_id": {"$in": user_ids}}, fields):
        sealed = user.get("id_number")
        found[user["_id"]] = ServiceIdentity(
            real_name=user.get("real_name"),
            id_type=user.get("id_type"),
            id_number=ctx.crypto.decrypt(sealed, "id_number") if sealed else user.get("id_masked"),
            gender=user.get("gender"),
            birth_date=_birth_date(user),
            volunteer_number=user.get("volunteer_number"),
        )
    return found
