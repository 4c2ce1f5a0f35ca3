"""Bad input across the whole API: schemathesis drives every operation of /openapi.json, as a
volunteer and as an admin, with real ids in the paths so calls get past 404. Every answer must
be one the document names (status, content type, body), and none a server error.

The app is served in-process (tests/conftest.py); the generated calls run in a worker thread
so the event loop keeps serving them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import hypothesis
import pytest
import requests
import schemathesis
from bson import ObjectId
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.parameters import ParameterLocation
from test_role_matrix import world  # noqa: F401 (the fixture: real ids for every path)

from server.domain import access, attendance

EXAMPLES = 5  # per operation, role and mode: bad input is found early or not at all here
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Calls that end every session (the development clock moved past their expiry) or the caller's
# run last, so they do not turn every later call into a 401.
LAST = ("POST /__dev__/clock", "POST /mp/v1/auth/logout")


@dataclass
class Run:
    base_url: str
    headers: dict[str, str]
    ids: dict[str, str]
    failures: list[str] = field(default_factory=list)
    calls: int = 0


def _fuzz(operations, run: Run) -> None:
    session = requests.Session()
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz_operation(op, mode, run, session)


def _fuzz_operation(op, mode, run: Run, session) -> None:
    seen: set[str] = set()
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @hypothesis.given(case=op.as_strategy(generation_mode=mode))
    def calls(case) -> None:
        if mode is GenerationMode.POSITIVE and case.path_parameters:
            # Real ids, so the operation itself runs; negative cases keep theirs (a 404).
            case.path_parameters = {k: run.ids.get(k, v) for k, v in case.path_parameters.items()}
        # A public operation is called as its clients do, without a token; so is one whose
        # negative case is in its headers (the token may be what the case left out).
        secured = "security" in op.definition.raw
        bad_headers = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
        headers = run.headers if secured and not bad_headers else {}
        response = case.call(base_url=run.base_url, session=session, headers=headers)
        run.calls += 1
        try:
            case.validate_response(response, checks=checks)
        except (Exception, BaseExceptionGroup) as exc:  # collected: no shrinking, all run
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if text not in seen:
                seen.add(text)
                run.failures.append(
                    f"{op.label} [{mode.value}] -> {response.status_code}: {str(exc)[:1500]}\n"
                    f"  {case.as_curl_command()}\n  {response.text[:300]}"
                )

    try:
        calls()
    except hypothesis.errors.Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # nothing to get wrong: no parameters, no body


@pytest.mark.timeout(240)
async def test_no_input_makes_a_server_error_or_an_undocumented_answer(
    ctx,
    base_url,
    http,
    login,
    world,  # noqa: F811
):
    admin = await login()
    volunteer = await login()
    await access.grant_role(ctx, ObjectId(admin.user_id), "org_admin", ObjectId(world.root))
    code = await attendance.checkin_code(ctx, world.activity)
    ids = {
        "org_id": world.county,
        "site_id": world.site,
        "user_id": world.someone,
        "role": "dispatcher",
        "activity_id": world.activity,
        "record_id": world.record,
        "reminder_id": world.dead_reminder,
        "campaign_id": world.campaign,
        "plan_id": world.plan,
        "request_id": world.request,
        "trip_id": world.trip,
        "expert_id": world.expert,
        "match_id": world.match,
        "scene": code.scene,
    }
    document = (await http.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document)
    began = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    first = [op for op in operations if op.label not in LAST]
    last = sorted(
        (op for op in operations if op.label in LAST), key=lambda op: LAST.index(op.label)
    )
    runs = [Run(base_url, who.headers, ids) for who in (volunteer, admin)]
    for run in runs:
        await asyncio.to_thread(_fuzz, first, run)
    for run in runs:
        await asyncio.to_thread(_fuzz, last, run)
    elapsed = time.monotonic() - began
    failures = [f for run in runs for f in run.failures]
    assert not failures, f"{len(failures)} failures:\n" + "\n\n".join(failures)
    assert all(run.calls > 0 for run in runs)
    print(f"{sum(r.calls for r in runs)} calls in {elapsed:.0f} s")
