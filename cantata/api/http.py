"""`POST /v1`: a JSON array of tasks in, `{"data":[...]}` and/or `{"errors":[...]}` out.

Steps, each answering with a Runware error instead of ever a 500:
1. body size (413 `maxRequestSizeExceeded`, checked on Content-Length and while reading),
   content type (415 `unsupportedContentType`), JSON (400 `invalidJSON`), a non-empty array
   (400 `invalidRequestBody`);
2. the API key: `Authorization: Bearer <key>` or an `authentication` task in the array
   (401 `missingApiKey` / `invalidApiKey`);
3. every task through the dispatcher, in order; a failed task never stops the others;
4. sync audioInference tasks are awaited together, up to `sync_wait_timeout`: finished ones give
   their results, unfinished ones a `syncWaitTimeout` error telling the client to poll.

HTTP status: 200 when any item succeeded or a task's own outcome is reported (mixed batches carry
both arrays); otherwise the status the errors share (400 validation, 401, 404 `taskNotFound`,
429 `rateLimitExceeded`, 503 shutting down), 400 when they differ. Runware's SDKs retry 408, 429
and 5xx, so a 5xx is never used for something a retry of the same taskUUID could not fix.

`X-Runware-Dry-Run: 1` validates and prices audioInference tasks without running them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .dispatch import Caller, Reply
from .errors import RunwareError
from .responses import TASK_TYPE, settled
from .services import Services
from .wire import WireJSONResponse

JSON_TYPES = ("application/json", "text/json")


class _TooLarge(Exception):
    pass


def envelope(data: list[dict[str, Any]], errors: list[RunwareError], status: int | None = None) -> JSONResponse:
    body: dict[str, Any] = {}
    if data or not errors:
        body["data"] = data
    if errors:
        body["errors"] = [e.to_dict() for e in errors]
    return WireJSONResponse(body, status_code=status or status_for(data, errors))


def status_for(data: list, errors: list[RunwareError]) -> int:
    if data:
        return 200
    statuses = {e.http_status for e in errors}
    if not statuses or 200 in statuses:
        return 200
    return statuses.pop() if len(statuses) == 1 else 400


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def post_v1(request: Request) -> JSONResponse:
    s: Services = request.app.state.cantata
    fail = s.dispatcher.error

    def refuse(err: RunwareError) -> JSONResponse:
        s.metrics.count_error(err.code)
        return envelope([], [err])

    try:
        raw = await _read_body(request, s.config.max_request_bytes)
    except _TooLarge:
        return refuse(fail("maxRequestSizeExceeded", f"The body is over the {s.config.max_request_bytes} byte limit."))
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type not in JSON_TYPES and not content_type.endswith("+json"):
        return refuse(fail("unsupportedContentType", f"Send the tasks as Content-Type: application/json, "
                                                     f"not {content_type}."))
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser allows
        return refuse(fail("invalidJSON", f"The body is not valid JSON: {exc}."))
    if not isinstance(payload, list) or not payload:
        return refuse(fail("invalidRequestBody", "The body must be a non-empty JSON array of task objects, "
                                                 "e.g. [{\"taskType\": \"ping\", \"ping\": true}]."))

    auth_tasks = [t for t in payload if isinstance(t, dict) and t.get("taskType") == "authentication"]
    presented = auth_tasks[0].get("apiKey") if auth_tasks else _bearer(request)
    key_id = s.keyring.identify(presented)
    if key_id is None:
        code = "invalidApiKey" if presented else "missingApiKey"
        message = ("Invalid API key." if presented else
                   "An API key is required: send 'Authorization: Bearer <key>' or a leading authentication task.")
        return refuse(fail(code, message, parameter="apiKey", task_type="authentication"))

    caller = Caller(key_id=key_id, transport="http", dry_run=request.headers.get("x-runware-dry-run", "").strip()
                    .lower() in ("1", "true", "yes"))
    skip = {id(t) for t in auth_tasks}
    replies = [await s.dispatcher.handle(task, caller) for task in payload if id(task) not in skip]
    await _wait_for_sync(s, replies, caller)
    data = [item for r in replies for item in r.data]
    errors = [err for r in replies for err in r.errors]
    return envelope(data, errors)


async def _wait_for_sync(s: Services, replies: list[Reply], caller: Caller) -> None:
    """Fill in the replies of sync tasks: their results, or a timeout error for the unfinished."""
    follows = [r for r in replies if r.follow]
    if not follows:
        return
    timeout = s.config.sync_wait_timeout

    def is_settled(task_uuid: str) -> bool:
        view = s.engine.view(task_uuid)
        return view is None or settled(view)

    await asyncio.gather(*(s.watch.until(r.follow, lambda u=r.follow: is_settled(u), timeout) for r in follows))
    for reply in follows:
        view = s.engine.view(reply.follow, caller.key_id)
        if view is not None and settled(view):
            reply.data, reply.errors = await asyncio.to_thread(s.renderer.items_or_failure, view)
        else:
            reply.errors = [s.dispatcher.error(
                "syncWaitTimeout", f"The task did not finish within the {timeout:g} s sync wait; it keeps running. "
                "Poll getResponse with this taskUUID for its results.", task_type=TASK_TYPE,
                task_uuid=reply.follow, http_status=200)]
