"""The HTTP core shared by handlers/ (the staff API), miniprogram_api/ and the console.

- `operation.py`: `@operation`, describing an endpoint once: its request and response models,
  its permission, whether a retry may replay it.
- `base.py`: `BaseHandler`: request ids, validation against the operation's models,
  authentication, the permission check, idempotent replay, the error envelope (domain errors
  mapped to HTTP in one place), metrics.
- `openapi.py`: /openapi.json, built from the operations.
- `shared.py`: the id path pattern, `Created`, `XLSX`, `ListQuery`.

Where models live: a request or response model that is the domain's own vocabulary (a new
activity, a plan, a page of records) is defined in the domain module and used by both the API
and the console; a model that only shapes one HTTP exchange (a query string, a wrapper around
a count) is defined beside its handler.
"""

from server.web.base import BaseHandler, ErrorEnvelope, NotFoundHandler, encode_json
from server.web.operation import Operation, operation
from server.web.shared import ID, XLSX, Created, ListQuery

__all__ = [
    "ID",
    "XLSX",
    "BaseHandler",
    "Created",
    "ErrorEnvelope",
    "ListQuery",
    "NotFoundHandler",
    "Operation",
    "encode_json",
    "operation",
]
