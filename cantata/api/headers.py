"""A limit on request header size that answers like the rest of the API.

uvicorn's HTTP parser (h11) refuses a request whose request line and headers exceed its buffer
(16 KiB by default) with a bare `400 Invalid HTTP request received.` in plain text, which Runware
clients cannot parse. This middleware sits in front of every route and refuses at
`MAX_HEADER_BYTES` with a Runware error body (431 `requestHeadersTooLarge`); the server runs h11
with a buffer of `H11_HEADER_BUFFER` (`UVICORN_OPTIONS`), so every oversized request below that
gets our answer, and only a client sending over 64 KiB of headers meets h11's own reply.
A WebSocket handshake over the limit gets the same reply as an HTTP denial response when the
server supports one, else it is closed before it is accepted.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from .http import envelope

#: Request target plus header names and values, counted as sent (": " and CRLF included).
MAX_HEADER_BYTES = 8 * 1024
#: What h11 may buffer before it refuses on its own; far above `MAX_HEADER_BYTES`.
H11_HEADER_BUFFER = 64 * 1024
#: uvicorn settings every server of ours runs with (`cantata serve`, the tests' real servers).
UVICORN_OPTIONS = {"http": "h11", "h11_max_incomplete_event_size": H11_HEADER_BUFFER}
_POLICY_VIOLATION = 1008


def header_bytes(scope: Scope) -> int:
    target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
    return target + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


class HeaderSizeLimit:
    """Pure ASGI middleware: requests over `MAX_HEADER_BYTES` of headers never reach a route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or header_bytes(scope) <= MAX_HEADER_BYTES:
            return await self.app(scope, receive, send)
        services = scope["app"].state.cantata
        services.metrics.count_error("requestHeadersTooLarge")
        response = envelope([], [services.dispatcher.error(
            "requestHeadersTooLarge", f"The request's URL and headers are over the {MAX_HEADER_BYTES} byte limit; "
            "send long values in the JSON body instead.")])
        if scope["type"] == "http":
            return await response(scope, receive, send)
        websocket = WebSocket(scope, receive, send)
        if "websocket.http.response" in scope.get("extensions", {}):
            await websocket.send_denial_response(response)
        else:
            await websocket.close(_POLICY_VIOLATION, "request headers too large")
