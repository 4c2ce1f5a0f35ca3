"""Errors the domain raises. Each has a stable snake_case code (the API contract's) and a kind;
the HTTP layer maps kinds to status codes, so domain code never speaks HTTP."""

from __future__ import annotations


class DomainError(Exception):
    kind = "invalid"
    code = "invalid_request"

    def __init__(
        self, message: str, *, code: str | None = None, field: str | None = None, **details
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.field = field
        self.details = details


class InvalidRequest(DomainError):
    kind, code = "invalid", "invalid_request"


class Unauthenticated(DomainError):
    kind, code = "unauthenticated", "unauthenticated"


class Forbidden(DomainError):
    kind, code = "forbidden", "forbidden"


class NotFound(DomainError):
    kind, code = "not_found", "not_found"


class Conflict(DomainError):
    """The request is valid but the current state refuses it (activity_full, time_conflict, ...)."""

    kind, code = "conflict", "conflict"


class OutOfRange(DomainError):
    kind, code = "unprocessable", "out_of_range"


class RateLimited(DomainError):
    kind, code = "rate_limited", "rate_limited"


class UpstreamError(DomainError):
    kind, code = "upstream", "wechat_error"


class Unavailable(DomainError):
    kind, code = "unavailable", "unavailable"
