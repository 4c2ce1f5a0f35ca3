"""Free text as people type it: a control or invisible character, a line break in a one-line field,
or a blank where text is required is a 400 naming the field in Chinese, and nothing is stored;
several lines keep their breaks and tabs. Every string the API takes with a length limit
carries one of the patterns, so a new field cannot forget them, and no pattern ends in ``$``
(which lets a final line break through)."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest
from bson import ObjectId

from server.domain import access, orgs, text


async def test_a_title_with_a_control_character_or_blank_is_refused_and_nothing_stored(
    ctx, http, login
):
    root = await orgs.create_org(ctx, "省科协", "province", None)
    organiser = await login("o_text")
    await access.grant_role(ctx, ObjectId(organiser.user_id), "team_leader", root)
    starts = ctx.clock.now() + timedelta(days=3)
    body = {
        "description": "第一步：准备材料\n第二步：\t动手做 👨\u200d👩\u200d👧",
        "org_id": str(root),
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=2)).isoformat(),
        "capacity": 20,
        "address": "",
    }

    async def create(title: str, **change):
        return await http.post(
            "/api/v1/activities", json=body | change | {"title": title}, headers=organiser.headers
        )

    for title, message in [
        ("科学\x00实验", text.MESSAGES[text.LINE_REQUIRED]),
        ("科学\x1b[31m实验", text.MESSAGES[text.LINE_REQUIRED]),
        ("科学实验\n", text.MESSAGES[text.LINE_REQUIRED]),
        ("\u3000 ", text.MESSAGES[text.LINE_REQUIRED]),
        ("\u202e验实学科", text.MESSAGES[text.LINE_REQUIRED]),
        ("\u200b\u200b", text.MESSAGES[text.LINE_REQUIRED]),
    ]:
        refused = await create(title)
        assert refused.status_code == 400, (title, refused.text)
        error = refused.json()["error"]
        assert (error["code"], error["field"]) == ("invalid_request", "title")
        assert error["message"] == f"字段 title: {message}"
    refused = await create("科学实验", description="说明\x07")
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["message"] == f"字段 description: {text.MESSAGES[text.LINES]}"
    assert await ctx.db["activities"].count_documents({}) == 0

    created = await create("科学 实验秀")
    assert created.status_code == 201, created.text
    stored = await ctx.db["activities"].find_one({"_id": ObjectId(created.json()["id"])})
    assert (stored["title"], stored["description"]) == ("科学 实验秀", body["description"])


async def test_every_bounded_string_the_api_takes_is_checked_for_control_characters(http):
    document = (await http.get("/openapi.json")).json()
    unchecked, open_ended = [], []

    def walk(schema: dict, where: str) -> None:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            if name not in seen:
                seen.add(name)
                walk(document["components"]["schemas"][name], name)
            return
        if schema.get("type") == "string" and "maxLength" in schema and "pattern" not in schema:
            unchecked.append(where)
        if schema.get("pattern", "").endswith("$"):
            open_ended.append(where)
        for key, sub in schema.get("properties", {}).items():
            walk(sub, f"{where}.{key}")
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                walk(schema[key], f"{where}[]")
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in schema.get(key, []):
                walk(sub, where)

    seen: set[str] = set()
    bodies = 0
    for path, item in document["paths"].items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {})
            for media in content.values():
                bodies += 1
                walk(media["schema"], f"{method.upper()} {path}")
            for parameter in op.get("parameters", []):
                if parameter["in"] == "query":
                    walk(parameter["schema"], f"{method.upper()} {path}?{parameter['name']}")
    assert bodies > 20
    assert unchecked == [], unchecked
    assert open_ended == [], open_ended


async def test_a_login_code_or_refresh_token_ending_in_a_line_break_is_refused(http, emulator):
    # ``$`` in a pattern also matches before a final line break; these end at the last character.
    code = await emulator.jscode("o_break")
    answer = await http.post("/mp/v1/auth/login", json={"code": code + "\n"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == "code"
    logged_in = await http.post("/mp/v1/auth/login", json={"code": code})
    assert logged_in.status_code == 200, "the refused call did not use the code up"
    token = logged_in.json()["refresh_token"]
    answer = await http.post("/mp/v1/auth/refresh", json={"refresh_token": token + "\n"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == "refresh_token"
    refreshed = await http.post("/mp/v1/auth/refresh", json={"refresh_token": token})
    assert refreshed.status_code == 200, refreshed.text


def test_a_clock_time_or_adcode_is_the_whole_string():
    for kind, good, bad in [
        (text.HHMM, "08:30", ["08:30\n", "8:30", "24:00", " 08:30"]),
        (text.ADCODE, "410782", ["410782\n", "41078", "4107820"]),
    ]:
        assert msgspec.convert(good, kind) == good
        for value in bad:
            with pytest.raises(msgspec.ValidationError):
                msgspec.convert(value, kind)
