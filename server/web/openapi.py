"""/openapi.json, generated from the same models that validate requests (see operation.py)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from server.domain import access
from server.web.base import BaseHandler
from server.web.operation import Operation

_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")
_ERROR_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}


def _path(pattern: str) -> str:
    return _GROUP.sub(r"{\1}", pattern).rstrip("$")


def build_document(routes: list[tuple], *, title: str, version: str, error_model: type) -> dict:
    operations: list[tuple[str, str, Operation, list[str]]] = []
    models: set[type] = {error_model}
    for pattern, handler, *_ in routes:
        for method in ("get", "post", "put", "patch", "delete"):
            op = getattr(getattr(handler, method, None), "operation", None)
            if op is None:
                continue
            operations.append((_path(pattern), method, op, _GROUP.findall(pattern)))
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


def _operation(op: Operation, params: list[str], components: dict) -> dict:
    doc: dict[str, Any] = {"summary": op.summary}
    if op.permission is not None:
        roles = sorted(access.roles_holding(op.permission))
        doc["description"] = f"Permission `{op.permission}`: {', '.join(roles)}."
        doc["x-permission"] = op.permission
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in params
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
    if op.response is not None:
        ok["content"] = {op.content_type: {"schema": _ref(op.response)}}
    elif op.content_type != "application/json":
        ok["content"] = {op.content_type: {"schema": {"type": "string", "format": "binary"}}}
    responses: dict[str, Any] = {str(op.status): ok}
    error = {"description": "Error", "content": {"application/json": {"schema": _ERROR_REF}}}
    if op.body is not None or op.query is not None:
        responses["400"] = error
    if op.auth:
        responses["401"] = error
        doc["security"] = [{"bearer": []}]
    for status in op.errors:
        responses[str(status)] = error
    doc["responses"] = responses
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
