"""Describing an endpoint once: the request and response models that validate it are the ones
/openapi.json publishes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Operation:
    summary: str
    body: type | None = None
    query: type | None = None
    response: type | None = None
    status: int = 200
    auth: bool = True
    errors: tuple[int, ...] = ()  # status codes beyond 400/401 this endpoint may answer
    content_type: str = "application/json"
    idempotent: bool = False
    tags: tuple[str, ...] = ()


def operation(summary: str, **kwargs):
    """Attach an Operation to a handler method; BaseHandler.prepare validates against it."""

    def attach(method):
        method.operation = Operation(summary=summary, **kwargs)
        return method

    return attach
