"""Describing an endpoint once: the request and response models that validate it are the ones
/openapi.json publishes, and the permission the caller needs."""

from __future__ import annotations

from dataclasses import dataclass

from server.domain import access


@dataclass(frozen=True)
class Operation:
    summary: str
    body: type | None = None
    query: type | None = None
    response: type | None = None
    status: int = 200
    # Other success statuses answered with the same model (a grant that is new answers 201).
    statuses: tuple[int, ...] = ()
    auth: bool = True
    # Error statuses specific to this endpoint (a rate-limited one names its 429 here);
    # openapi.py adds those every endpoint of its kind may answer (see `generic_errors`).
    errors: tuple[int, ...] = ()
    content_type: str = "application/json"
    # Other content types of the success response (a list also offered as a workbook).
    content_types: tuple[str, ...] = ()
    idempotent: bool = False
    tags: tuple[str, ...] = ()
    # A staff operation's permission in server/domain/access.py; the base handler refuses a
    # caller who holds it nowhere, and `authorize` checks it where the operation acts.
    permission: str | None = None

    def __post_init__(self) -> None:
        if self.permission is not None and self.permission not in access.PERMISSIONS:
            raise ValueError(f"unknown permission {self.permission!r}")


def operation(summary: str, **kwargs):
    """Attach an Operation to a handler method; BaseHandler.prepare validates against it."""

    def attach(method):
        method.operation = Operation(summary=summary, **kwargs)
        return method

    return attach
