"""The tornado Application, built from the route lists of handlers/ and miniprogram_api/."""

from __future__ import annotations

import tornado.web

import handlers
import miniprogram_api
from server.context import Context
from server.web import ErrorEnvelope, NotFoundHandler, encode_json
from server.web.openapi import OpenApiHandler, build_document

VERSION = "0.1.0"


def all_routes() -> list[tuple]:
    return [*handlers.ROUTES, *miniprogram_api.ROUTES]


def make_app(ctx: Context) -> tornado.web.Application:
    routes = all_routes()
    document = build_document(routes, title="ikepu API", version=VERSION, error_model=ErrorEnvelope)
    rules = [(pattern, handler, {"ctx": ctx, "route": pattern}) for pattern, handler in routes]
    rules.append(
        (
            r"/openapi.json",
            OpenApiHandler,
            {"ctx": ctx, "route": "/openapi.json", "document": encode_json(document)},
        )
    )
    return tornado.web.Application(
        rules,
        default_handler_class=NotFoundHandler,
        default_handler_args={"ctx": ctx},
        # server/web/base.py logs every request with its route and request id.
        log_function=lambda handler: None,
        xsrf_cookies=False,
        serve_traceback=False,
    )
