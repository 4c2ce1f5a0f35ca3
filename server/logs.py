"""Structured logs: JSON lines when not on a terminal, readable lines on one.

A last redaction step masks anything shaped like a mainland mobile number and drops secrets by
key, so a careless log call cannot leak personal data.
"""

from __future__ import annotations

import logging
import re
import sys

import structlog

_MOBILE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")
_SECRET_KEYS = frozenset({"session_key", "secret", "access_token", "refresh_token", "password"})


def mask_mobile(text: str) -> str:
    return _MOBILE.sub(r"\1****\2", text)


def _redact(_logger, _method, event: dict) -> dict:
    for key in list(event):
        if key in _SECRET_KEYS:
            event[key] = "[redacted]"
        elif isinstance(event[key], str):
            event[key] = mask_mobile(event[key])
    return event


def configure_logging(fmt: str = "auto", level: str = "info", stream=None) -> None:
    stream = stream or sys.stderr
    json_lines = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        structlog.processors.format_exc_info,
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Tornado's own access log would duplicate ours (handlers/base.py logs each request).
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
