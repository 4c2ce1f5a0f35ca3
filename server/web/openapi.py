"""/openapi.json, generated from the same models that validate requests (see operation.py)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from server.domain import access
from server.web.base import BaseHandler
from server.web.operation import Operation

_GROUP = re.compile(r"\(\?P<(\w+)>([^)]*)\)")
_ESCAPED = re.compile(r"\\(.)")
_BINARY = {"type": "string", "format": "binary"}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}
_ERROR_DESCRIPTION = {
    400: "Invalid request (`invalid_request`)",
    401: "Not signed in, or the session ended (`unauthenticated`)",
    403: "Not allowed (`forbidden`)",
    404: "No such resource (`not_found`)",
    409: "Refused by the current state; on a retry, `idempotency_key_reused` (the key came with "
    "another body) or `request_in_progress`",
    422: "Out of range (`out_of_range`)",
    429: "Too many requests (`rate_limited`)",
    502: "WeChat refused or failed (`wechat_error`)",
    503: "The database is unavailable; retry later (`unavailable`)",
}


def _path(pattern: str) -> str:
    return _ESCAPED.sub(r"\1", _GROUP.sub(r"{\1}", pattern).rstrip("$"))


def generic_errors(op: Operation, path_params: list[str]) -> set[int]:
    """The error statuses every operation of this kind may answer, whatever it does."""
    statuses = {503}  # the database may be unreachable on any call
    if op.body is not None or op.query is not None or op.idempotent:
        statuses.add(400)
    # A token that is sent is checked even where none is needed: it may have expired.
    statuses.add(401)
    if op.auth:
        statuses.add(403)  # a user may be disabled, a role revoked
    if path_params or _names_an_id(op.query):
        statuses.add(404)  # an id that names nothing
    if op.idempotent:
        statuses.add(409)  # idempotency_key_reused, request_in_progress
    return statuses


def _names_an_id(model: type | None) -> bool:
    return model is not None and any(
        f.encode_name.endswith("_id") for f in msgspec.structs.fields(model)
    )


def build_document(routes: list[tuple], *, title: str, version: str, error_model: type) -> dict:
    operations: list[tuple[str, str, Operation, dict[str, str]]] = []
    models: set[type] = {error_model}
    for pattern, handler, *_ in routes:
        for method in ("get", "post", "put", "patch", "delete"):
            op = getattr(getattr(handler, method, None), "operation", None)
            if op is None:
                continue
            operations.append((_path(pattern), method, op, dict(_GROUP.findall(pattern))))
            models.update(m for m in (op.body, op.response, op.query) if m is not None)

    ordered = sorted(models, key=lambda m: m.__name__)
    _, components = msgspec.json.schema_components(
        ordered, ref_template="#/components/schemas/{name}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for path, method, op, params in operations:
        paths.setdefault(path, {})[method] = _operation(op, params, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(op: Operation, params: dict[str, str], components: dict) -> dict:
    doc: dict[str, Any] = {"summary": op.summary}
    if op.permission is not None:
        roles = sorted(access.roles_holding(op.permission))
        doc["description"] = f"Permission `{op.permission}`: {', '.join(roles)}."
        doc["x-permission"] = op.permission
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": f"^(?:{regex})$"},
        }
        for name, regex in params.items()
    ]
    if op.query is not None:
        schema = components[op.query.__name__]
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            parameters.append(
                {"name": name, "in": "query", "required": name in required, "schema": prop}
            )
    if op.idempotent:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "A retry with the same key returns the first answer.",
                "schema": {"type": "string", "maxLength": 200},
            }
        )
    if parameters:
        doc["parameters"] = parameters
    if op.body is not None:
        doc["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    ok: dict[str, Any] = {"description": "OK"}
    content: dict[str, Any] = {}
    if op.response is not None:
        content[op.content_type] = {"schema": _ref(op.response)}
    elif op.content_type != "application/json":
        content[op.content_type] = {"schema": _BINARY}
    for content_type in op.content_types:
        content[content_type] = {"schema": _BINARY}
    if content:
        ok["content"] = content
    responses: dict[str, Any] = {str(s): ok for s in sorted({op.status, *op.statuses})}
    for status in sorted(generic_errors(op, list(params)) | set(op.errors)):
        error = {
            "description": _ERROR_DESCRIPTION.get(status, "Error"),
            "content": {"application/json": {"schema": _ERROR_REF}},
        }
        if str(status) in responses:  # a status that is both an answer and an error
            answer = responses[str(status)]["content"]["application/json"]["schema"]
            error["content"]["application/json"]["schema"] = {"anyOf": [answer, _ERROR_REF]}
        responses[str(status)] = error
    doc["responses"] = responses
    if op.auth:
        doc["security"] = [{"bearer": []}]
    if op.tags:
        doc["tags"] = list(op.tags)
    return doc


def _ref(model: type) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


class OpenApiHandler(BaseHandler):
    document: bytes = b""

    def initialize(self, ctx, route: str = "unmatched", document: bytes = b"") -> None:
        super().initialize(ctx, route)
        self.document = document

    async def get(self) -> None:
        self.send_file(self.document, "application/json")
