"""Service records in the forms of the national volunteer systems: the bulk import of 中国科协's
科技志愿服务 platform and the service-record items of 中国志愿服务网, per organisation (its
subtree) and period, as workbooks.

Owns the `record_exports` collection: one entry per export, whoever made it (who, when, which
organisation, period, form, whether ID numbers were in full, rows written and held back).

Only confirmed hours are exported, from the ledger (`hours`). A record whose volunteer lacks an
identity item a form requires is not written to the form's sheet but listed on a second sheet
with what is missing. ID numbers are in full only for a caller holding
`records.export_identity` (who did not ask for them masked); every other export has them
masked, and the workbook's last sheet states which policy applied.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

import msgspec
import structlog
from bson import ObjectId

from server.clock import SHANGHAI
from server.domain import access, activities, hours, id_documents, identity, orgs, sites
from server.domain.ids import parse_id
from server.domain.paging import page_by_id
from server.domain.stats.periods import Period
from server.spreadsheets import Sheet, workbook

log = structlog.get_logger(__name__)

FormKey = Literal["cast", "chinavolunteer"]


@dataclass(frozen=True)
class Column:
    header: str
    item: str  # the ServiceRecord field that fills it
    required: bool = False


@dataclass(frozen=True)
class Form:
    key: str
    system: str
    sheet: str
    source: str
    columns: tuple[Column, ...]


# The items of a service record follow 民政部令第67号《志愿服务记录与证明出具办法（试行）》
# (2020-12-02, in force 2021-02-01), 第四条 and the articles on 志愿服务情况: who served (name,
# ID document), the activity's name, time, place, content and hours, and the recording
# organisation. Each form's header text is that system's; a change to a template is made here.
FORMS: dict[str, Form] = {
    "cast": Form(
        key="cast",
        system="中国科协科技志愿服务信息平台",
        sheet="志愿服务时长导入",
        source=(
            "中国科协科技志愿服务信息平台的志愿服务时长批量导入模板（志愿者、证件、活动、"
            "服务起止时间与时长各列）；服务记录各项依《志愿服务记录与证明出具办法（试行）》"
            "（民政部令第67号）。列名以平台当前提供下载的模板为准"
        ),
        columns=(
            Column("姓名", "real_name", required=True),
            Column("性别", "gender"),
            Column("证件类型", "id_type", required=True),
            Column("证件号码", "id_number", required=True),
            Column("出生日期", "birth_date"),
            Column("活动名称", "project", required=True),
            Column("服务开始时间", "started_at", required=True),
            Column("服务结束时间", "ended_at", required=True),
            Column("服务时长（小时）", "hours", required=True),
            Column("服务地点", "place"),
            Column("服务内容", "content"),
            Column("组织单位", "recorder"),
        ),
    ),
    "chinavolunteer": Form(
        key="chinavolunteer",
        system="中国志愿服务网（全国志愿服务信息系统）",
        sheet="志愿服务记录",
        source=(
            "《志愿服务记录与证明出具办法（试行）》（民政部令第67号）所列志愿服务记录事项，"
            "即中国志愿服务网补录服务记录的各项：志愿者姓名、证件类型和号码、志愿者编号、"
            "志愿服务项目名称、服务时间、地点、内容、时长、记录单位和记录日期"
        ),
        columns=(
            Column("志愿者姓名", "real_name", required=True),
            Column("证件类型", "id_type", required=True),
            Column("证件号码", "id_number", required=True),
            Column("志愿者编号", "volunteer_number"),
            Column("服务项目名称", "project", required=True),
            Column("服务开始时间", "started_at", required=True),
            Column("服务结束时间", "ended_at", required=True),
            Column("服务地点", "place"),
            Column("服务内容", "content"),
            Column("服务时长（小时）", "hours", required=True),
            Column("记录单位", "recorder", required=True),
            Column("记录日期", "recorded_on", required=True),
        ),
    ),
}

HELD_BACK_HEADERS = ("记录编号", "志愿者", "用户ID", "服务项目名称", "服务日期", "服务时长（小时）",
                     "缺少项")  # fmt: skip
MASKING = {
    "full": (
        "完整：导出人具有 records.export_identity 权限。本次导出已记入导出日志；"
        "文件仅用于向上述系统提交，用后请删除"
    ),
    "masked": (
        "已脱敏：证件号码只保留前4位和后4位（如 4101**********1234），不能用于导入。"
        "完整号码须由具有 records.export_identity 权限的组织管理员导出"
    ),
}


class ServiceRecord(msgspec.Struct):
    """One confirmed credit with the items a national form may ask for, in Chinese text."""

    record_id: str
    user_id: str
    real_name: str | None
    gender: str | None
    id_type: str | None
    id_number: str | None
    birth_date: date | None
    volunteer_number: str | None
    project: str
    started_at: datetime
    ended_at: datetime
    hours: float
    place: str | None
    content: str | None
    recorder: str
    recorded_on: date | None


class Export(msgspec.Struct):
    export_id: str
    filename: str
    body: bytes
    rows: int
    held_back: int


class ExportEntry(msgspec.Struct):
    """One export as the log shows it."""

    id: str
    by: str
    by_name: str | None
    at: datetime
    org_id: str
    org_name: str | None
    form: str
    first: date = msgspec.field(name="from")
    last: date = msgspec.field(name="to")
    identity: Literal["full", "masked"]
    rows: int
    held_back: int


class ExportPage(msgspec.Struct):
    items: list[ExportEntry]
    next_cursor: str | None


_NOBODY = id_documents.ServiceIdentity(None, None, None, None, None, None)


def _exports(ctx):
    return ctx.db["record_exports"]


async def service_records(
    ctx, org_ids: list[ObjectId], period: Period, *, reveal: bool
) -> list[ServiceRecord]:
    """The confirmed credits of these organisations served in the period, each with its
    volunteer's identity items (numbers in full only when `reveal`)."""
    credits = await hours.confirmed_served(ctx, org_ids, period.start, period.end)
    people = await id_documents.service_identities(
        ctx, sorted({c["user_id"] for c, _ in credits}), reveal=reveal
    )
    held = {}
    for activity_id in sorted({c["activity_id"] for c, _ in credits if c.get("activity_id")}):
        held[activity_id] = await activities.get_doc(ctx, activity_id)
    site_ids = sorted({c["site_id"] for c, _ in credits if c.get("site_id")})
    site_names = {k: v["name"] for k, v in (await sites.briefs(ctx, site_ids)).items()}
    org_ids = sorted({c["org_id"] for c, _ in credits})
    org_names = {k: v.name for k, v in (await orgs.nodes(ctx, org_ids)).items()}
    records = []
    for c, value in credits:
        person = people.get(c["user_id"]) or _NOBODY
        activity = held.get(c.get("activity_id"), {})
        basis = c.get("basis", {})
        place = " ".join(
            p for p in (site_names.get(c.get("site_id")), activity.get("address")) if p
        )
        confirmed_at = c.get("confirmed_at")
        records.append(
            ServiceRecord(
                record_id=str(c["_id"]),
                user_id=str(c["user_id"]),
                real_name=person.real_name,
                gender=id_documents.GENDER_NAMES.get(person.gender or ""),
                id_type=id_documents.ID_TYPE_NAMES.get(person.id_type or ""),
                id_number=person.id_number,
                birth_date=person.birth_date,
                volunteer_number=person.volunteer_number,
                project=activity.get("title") or "科普志愿服务",
                # What the volunteer served: check-in to check-out where recorded, else the
                # activity's own times.
                started_at=basis.get("checked_in_at")
                or activity.get("starts_at")
                or c["served_at"],
                ended_at=basis.get("checked_out_at") or activity.get("ends_at") or c["served_at"],
                hours=value,
                place=place or None,
                content=(activity.get("description") or "").strip()[:200] or None,
                recorder=org_names.get(c["org_id"], ""),
                recorded_on=confirmed_at.astimezone(SHANGHAI).date() if confirmed_at else None,
            )
        )
    return records


def _missing(form: Form, record: ServiceRecord) -> list[str]:
    return [c.header for c in form.columns if c.required and getattr(record, c.item) in (None, "")]


def _cell(value):
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    return value


def render(
    form: Form,
    records: list[ServiceRecord],
    *,
    identity_policy: str,
    notes: list[tuple[str, str]],
) -> tuple[bytes, int, int]:
    """The workbook (the form's sheet, the records held back, the notes) and how many rows
    each of the first two has. CPU work: run it in an executor."""
    rows, held_back = [], []
    for record in records:
        missing = _missing(form, record)
        if missing:
            held_back.append(
                [record.record_id, record.real_name or "（未实名）", record.user_id, record.project,
                 record.started_at, record.hours, "、".join(missing)]
            )  # fmt: skip
        else:
            rows.append([_cell(getattr(record, c.item)) for c in form.columns])
    summary = [
        ("导出格式", f"{form.system}：{form.sheet}"),
        *notes,
        ("证件号码", MASKING[identity_policy]),
        ("记录数", str(len(rows))),
        ("待补全记录数", f"{len(held_back)}（见“待补全”表：缺少必填的身份信息，未写入导入表）"),
        ("范围", "仅导出已确认的服务时长（含更正）；待确认、已撤销的时长不导出"),
        ("列的来源", form.source),
    ]
    body = workbook(
        [
            Sheet(form.sheet, [c.header for c in form.columns], rows),
            Sheet("待补全", HELD_BACK_HEADERS, held_back),
            Sheet("说明", ("项目", "内容"), [list(item) for item in summary], widths={2: 90}),
        ]
    )
    return body, len(rows), len(held_back)


async def export(
    ctx, by: ObjectId, org_id, form_key: str, period: Period, *, masked: bool = False
) -> Export:
    """The organisation's service records of the period in a form's workbook, logged. The
    caller must hold `records.export` there; ID numbers are in full when they also hold
    `records.export_identity` there and did not ask for them masked."""
    org = await orgs.get_org(ctx, parse_id(org_id, "org_id"))
    await access.require(ctx, by, "records.export", org_id=org["_id"], field="org_id")
    reveal = not masked and await access.may(ctx, by, "records.export_identity", org_id=org["_id"])
    form = FORMS[form_key]
    records = await service_records(
        ctx, await orgs.subtree_ids(ctx, org["_id"]), period, reveal=reveal
    )
    now = ctx.clock.now()
    policy = "full" if reveal else "masked"
    exporter = (await identity.briefs(ctx, [by])).get(by, {})
    notes = [
        ("组织（含下级）", org["name"]),
        ("服务期间", f"{period.first.isoformat()} 至 {period.last.isoformat()}"),
        ("导出人", exporter.get("real_name") or str(by)),
        ("导出时间", now.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")),
    ]
    body, rows, held_back = await ctx.run_blocking(
        functools.partial(render, form, records, identity_policy=policy, notes=notes)
    )
    entry = {
        "_id": ObjectId(),
        "by": by,
        "at": now,
        "org_id": org["_id"],
        "form": form.key,
        "first": period.first.isoformat(),
        "last": period.last.isoformat(),
        "identity": policy,
        "rows": rows,
        "held_back": held_back,
    }
    # Logged before the file leaves: an export the log cannot record is not made.
    await _exports(ctx).insert_one(entry)
    log.info("records_exported", by=str(by), org_id=str(org["_id"]), form=form.key,
             identity=policy, rows=rows, held_back=held_back)  # fmt: skip
    filename = f"service-records-{form.key}-{period.first.isoformat()}-{period.last.isoformat()}"
    return Export(
        export_id=str(entry["_id"]),
        filename=f"{filename}.xlsx",
        body=body,
        rows=rows,
        held_back=held_back,
    )


async def list_exports(ctx, org_ids: list[ObjectId], cursor: str | None, limit: int) -> ExportPage:
    """The exports of these organisations, newest first."""
    docs, following = await page_by_id(
        _exports(ctx), {"org_id": {"$in": org_ids}}, cursor, limit, newest_first=True
    )
    people = await identity.briefs(ctx, sorted({d["by"] for d in docs}))
    names = {
        k: v.name for k, v in (await orgs.nodes(ctx, sorted({d["org_id"] for d in docs}))).items()
    }
    items = [
        ExportEntry(
            id=str(d["_id"]),
            by=str(d["by"]),
            by_name=people.get(d["by"], {}).get("real_name"),
            at=d["at"],
            org_id=str(d["org_id"]),
            org_name=names.get(d["org_id"]),
            form=d["form"],
            first=date.fromisoformat(d["first"]),
            last=date.fromisoformat(d["last"]),
            identity=d["identity"],
            rows=d["rows"],
            held_back=d["held_back"],
        )
        for d in docs
    ]
    return ExportPage(items=items, next_cursor=following)
