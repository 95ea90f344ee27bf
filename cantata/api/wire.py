"""JSON as it goes on the wire: every HTTP body and WebSocket frame is written here, and writing
it can never fail.

Clients control much of what a response echoes (taskUUID, taskType, unknown key names, the
stored request in getTaskDetails), and JSON lets them send things that have no UTF-8 form: a
lone UTF-16 surrogate (`"\\ud800"` is a legal escape that Python decodes to an unpaired code
point). Encoding such a string to UTF-8 raises, and a response that raises after its tasks were
queued tells the client "failed" about work that was accepted. So the writer replaces every
surrogate with U+FFFD (the Unicode replacement character), which every JSON parser accepts and
every client can display, and turns anything else JSON cannot carry (a non-finite float, an
object of no JSON type, nesting deeper than the encoder recurses) into something it can.
The fast path is the plain encoder; the repair walk runs only when that fails.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.responses import JSONResponse

_SURROGATES = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"
#: Deeper than this, the repair walk writes a placeholder instead of recursing further.
_MAX_DEPTH = 200
_TOO_DEEP = "(nested too deeply to show)"


def dumps(value: Any) -> str:
    """Compact JSON text for `value` that is valid Unicode, whatever `value` holds."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        text = json.dumps(_repaired(value, 0), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return _SURROGATES.sub(REPLACEMENT, text)


def encode(value: Any) -> bytes:
    """`dumps` as UTF-8 bytes (cannot fail: `dumps` leaves no surrogate to trip the codec)."""
    return dumps(value).encode("utf-8")


def _repaired(value: Any, depth: int) -> Any:
    """A copy of `value` made of plain JSON types only."""
    if depth > _MAX_DEPTH:
        return _TOO_DEEP
    if isinstance(value, dict):
        return {_key(k): _repaired(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_repaired(v, depth + 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return _int(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _int(value: int) -> int | str:
    """The int itself, or a placeholder when it has more digits than Python will print."""
    try:
        repr(value)
    except ValueError:
        return "(integer too long to show)"
    return value


def _key(key: Any) -> str:
    return key if isinstance(key, str) else str(key)


class WireJSONResponse(JSONResponse):
    """Starlette's JSONResponse, rendered by `encode` (Starlette's own render raises on a lone
    surrogate, which would turn a reply into a 500 after its tasks were accepted)."""

    def render(self, content: Any) -> bytes:
        return encode(content)
