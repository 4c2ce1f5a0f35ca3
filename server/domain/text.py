"""Strings as people type them: free text of one line (names, titles, addresses, plates) or
several (descriptions, reasons), and the formats some strings come in (clock times, adcodes).

Free text may not hold control characters (a NUL or an escape sequence in a site's name ends
up in spreadsheets, certificates and subscribe messages) nor invisible ones; several lines
may hold tabs and line breaks. A required text may not be blank either. No pattern ends in
``$``: in Python it also matches before a final line break (see :func:`whole`).
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

# Invisible characters that change how text reads: direction overrides and isolates (a name
# shown as one thing and sorted as another), zero-width spaces (a "name" of nothing but them is
# not blank to ``\S``) and the byte-order mark. Joiners stay: emoji need them.
_INVISIBLE: Final = r"\u200b\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff"
_NO_CONTROL: Final = rf"(?![\s\S]*[\x00-\x1f\x7f-\x9f{_INVISIBLE}])"
_NO_CONTROL_BUT_BREAKS: Final = rf"(?![\s\S]*[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_INVISIBLE}])"
_NOT_BLANK: Final = r"(?=[\s\S]*\S)"

LINE: Final = "^" + _NO_CONTROL
LINE_REQUIRED: Final = LINE + _NOT_BLANK
LINES: Final = "^" + _NO_CONTROL_BUT_BREAKS
LINES_REQUIRED: Final = LINES + _NOT_BLANK

MESSAGES: Final = {
    LINE: "不能含换行、控制字符或不可见字符",
    LINE_REQUIRED: "不能为空白，也不能含换行、控制字符或不可见字符",
    LINES: "不能含控制字符或不可见字符（换行和制表符除外）",
    LINES_REQUIRED: "不能为空白，也不能含控制字符或不可见字符（换行和制表符除外）",
}
"""What a field breaking each pattern is told (the web layer words validation errors)."""


def whole(regex: str) -> str:
    """A pattern the whole string must match. ``$`` would let ``"08:00\\n"`` through and JSON
    Schema readers lack ``\\Z``; a lookahead for no further character is understood by both."""
    return rf"^(?:{regex})(?![\s\S])"


HHMM = Annotated[str, msgspec.Meta(pattern=whole(r"([01]\d|2[0-3]):[0-5]\d"))]
"""A clock time, 08:30."""
ADCODE = Annotated[str, msgspec.Meta(pattern=whole(r"\d{6}"))]
"""A six-digit administrative division code (行政区划代码)."""


def line(max_length: int, min_length: int = 1) -> type[str]:
    """One line of at most ``max_length`` characters; with ``min_length=0`` it may be empty."""
    pattern = LINE_REQUIRED if min_length else LINE
    meta = msgspec.Meta(min_length=min_length, max_length=max_length, pattern=pattern)
    return Annotated[str, meta]  # type: ignore[return-value]


def lines(max_length: int, min_length: int = 1) -> type[str]:
    """Text of several lines, at most ``max_length`` characters; ``min_length=0`` as for
    :func:`line`."""
    pattern = LINES_REQUIRED if min_length else LINES
    meta = msgspec.Meta(min_length=min_length, max_length=max_length, pattern=pattern)
    return Annotated[str, meta]  # type: ignore[return-value]
