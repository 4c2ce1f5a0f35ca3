"""The tornado Application, built from the route lists of handlers/, miniprogram_api/ and the
console."""

from __future__ import annotations

import functools
from pathlib import Path

import tornado.web

import console
import handlers
import miniprogram_api
from handlers import experts, records
from miniprogram_api import experts as my_expert
from server.context import Context
from server.web import ErrorEnvelope, NotFoundHandler, encode_json
from server.web.openapi import OpenApiHandler, build_document

VERSION = "0.1.0"
CONSOLE_DIR = Path(console.__file__).parent


def all_routes() -> list[tuple]:
    staff = [*handlers.ROUTES, *records.ROUTES, *experts.ROUTES]
    return [*staff, *miniprogram_api.ROUTES, *my_expert.ROUTES]


@functools.cache
def api_document() -> bytes:
    """The OpenAPI document, encoded: it follows from the route lists alone, and building it
    takes a tenth of a second (the test suite builds an app per test)."""
    document = build_document(
        all_routes(), title="ikepu API", version=VERSION, error_model=ErrorEnvelope
    )
    return encode_json(document)


def make_app(ctx: Context) -> tornado.web.Application:
    rules = [
        (pattern, handler, {"ctx": ctx, "route": pattern})
        for pattern, handler in [*all_routes(), *console.ROUTES]
    ]
    rules.append(
        (
            r"/openapi.json",
            OpenApiHandler,
            {"ctx": ctx, "route": "/openapi.json", "document": api_document()},
        )
    )
    return tornado.web.Application(
        rules,
        default_handler_class=NotFoundHandler,
        default_handler_args={"ctx": ctx},
        # server/web/base.py logs every request with its route and request id.
        log_function=lambda handler: None,
        # The JSON API is bearer-token: no XSRF there. Console handlers check it themselves.
        xsrf_cookies=False,
        xsrf_cookie_kwargs={"httponly": True, "samesite": "Lax", "path": "/console/"},
        # Signs the console's session cookie; derived from the service's signing key, so every
        # process of a deployment agrees on it.
        cookie_secret=ctx.crypto.sign(b"console-cookies", "cookie_secret").hex(),
        template_path=str(CONSOLE_DIR / "templates"),
        static_path=str(CONSOLE_DIR / "static"),
        static_url_prefix="/console/static/",
        serve_traceback=False,
    )
