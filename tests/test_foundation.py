"""The core a request passes through: settings, error envelope, health, OpenAPI, metrics, clock."""

from __future__ import annotations

import io
import json

import pytest
from openapi_spec_validator import validate

from config import SettingsError, load_settings
from server.clock import Clock
from server.logs import configure_logging
from server.web import XLSX


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"IKEPU_PORT": "bad"}, "IKEPU_PORT"),
        ({"IKEPU_PORT": "70000"}, "IKEPU_PORT"),
        ({"IKEPU_MONGO_DRIVER": "mongoose"}, "IKEPU_MONGO_DRIVER"),
        ({"IKEPU_WECHAT_TIMEOUT_S": "-1"}, "IKEPU_WECHAT_TIMEOUT_S"),
    ],
)
def test_an_invalid_setting_is_named(env, named):
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)


def test_settings_layer_defaults_file_and_environment(tmp_path):
    toml = tmp_path / "ikepu.toml"
    toml.write_text('port = 9000\nmongodb_db = "from_file"\n')
    settings = load_settings({"IKEPU_CONFIG_FILE": str(toml), "IKEPU_PORT": "9100"})
    assert settings.port == 9100  # the environment wins over the file
    assert settings.mongodb_db == "from_file"
    assert settings.host == "127.0.0.1"  # default
    toml.write_text("prot = 1\n")
    with pytest.raises(SettingsError, match="prot"):
        load_settings({"IKEPU_CONFIG_FILE": str(toml)})


async def test_health_reports_the_database(http):
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "db": "ok"}


async def test_health_is_503_when_the_database_does_not_answer(ctx, http):
    await ctx.client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 5},
            "data": {"failCommands": ["ping"], "closeConnection": True},
        }
    )
    try:
        response = await http.get("/healthz")
    finally:
        await ctx.client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    assert response.status_code == 503
    assert response.json()["db"] == "unreachable"


async def test_unknown_routes_answer_with_the_error_envelope(http):
    response = await http.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "资源不存在", "field": None}
    }
    assert response.headers["X-Request-Id"]


@pytest.mark.parametrize("to", ["-4904", "1767225600", "tomorrow"])
async def test_a_time_in_a_query_must_be_written_as_a_time(http, login, to):
    volunteer = await login("o_time_query")
    answer = await http.get("/mp/v1/activities", params={"to": to}, headers=volunteer.headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == "to"
    written = await http.get(
        "/mp/v1/activities", params={"to": "2026-09-01T09:00:00+08:00"}, headers=volunteer.headers
    )
    assert written.status_code == 200, written.text


async def test_a_request_id_is_echoed(http):
    response = await http.get("/healthz", headers={"X-Request-Id": "abc123"})
    assert response.headers["X-Request-Id"] == "abc123"


async def test_openapi_document_is_valid_openapi_3_1(http):
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    validate(document)
    assert "/healthz" in document["paths"]


async def test_openapi_documents_every_answer_an_operation_can_give(http):
    paths = (await http.get("/openapi.json")).json()["paths"]

    def responses(path, method):
        return paths[path][method]["responses"]

    assert "404" in responses("/api/v1/depots", "get")  # an org_id that names nothing
    assert "409" in responses("/api/v1/sites", "post")  # an Idempotency-Key reused
    assert {"200", "201"} <= set(responses("/api/v1/orgs/{org_id}/roles", "post"))
    assert {"200", "201"} <= set(responses("/mp/v1/activities/{activity_id}/signup", "post"))
    stats = responses("/api/v1/stats/annual", "get")["200"]["content"]
    assert {"application/json", "text/csv", XLSX} <= set(stats)
    assert XLSX in responses("/api/v1/activities/{activity_id}/roster", "get")["200"]["content"]
    image = paths["/checkin-codes/{scene}.png"]["get"]
    assert image["parameters"][0]["schema"]["pattern"] == "^(?:[A-Za-z0-9_=-]{32})$"
    for path, methods in paths.items():
        for method, op in methods.items():
            assert {"401", "503"} <= set(op["responses"]), (method, path)
            if "{" in path:
                assert "404" in op["responses"], (method, path)


async def test_metrics_count_requests_by_route_and_status(http):
    await http.get("/healthz")
    await http.get("/nowhere")
    text = (await http.get("/metrics")).text
    assert 'ikepu_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert "ikepu_http_request_duration_seconds_bucket" in text


async def test_dev_clock_moves_the_service_clock(ctx, http):
    before = ctx.clock.now()
    response = await http.post("/__dev__/clock", json={"advance_s": 3600})
    assert response.status_code == 200
    assert response.json()["offset_s"] == 3600
    assert (ctx.clock.now() - before).total_seconds() >= 3600
    assert (await http.get("/__dev__/clock")).json()["offset_s"] == 3600
    bad = await http.post("/__dev__/clock", json={"advance_s": -5})
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "advance_s"
    assert ctx.clock.offset_s == 3600


@pytest.mark.parametrize(
    "settings_overrides",
    [{"dev_clock": False}, {"dev_clock": True, "wechat_appid": "wxreal", "wechat_secret": "s"}],
)
async def test_dev_clock_is_absent_unless_enabled_with_the_emulator(http, settings_overrides):
    assert (await http.get("/__dev__/clock")).status_code == 404
    assert (await http.post("/__dev__/clock", json={"advance_s": 1})).status_code == 404


def test_real_clock_cannot_be_moved():
    with pytest.raises(PermissionError):
        Clock().advance(10)


def test_logs_are_json_lines_and_mask_phone_numbers():
    import structlog

    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    structlog.get_logger("t").info("bound", phone="13812345678", session_key="abc")
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["phone"] == "138****5678"
    assert line["session_key"] == "[redacted]"
