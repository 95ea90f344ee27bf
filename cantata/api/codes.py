"""Error codes the server emits outside task validation, with the HTTP status each implies.

Validation codes live in `errors.ERROR_CODES`. Names follow Runware's where one exists
(`invalidApiKey`, `conflictTaskUUID`, `taskNotFound`, `rateLimitExceeded`, `inferenceError`) and
otherwise keep to the prefixes Runware's SDKs bucket by: `invalid*`/`missing*`/`unsupported*`/
`conflict*`/`max*` read as validation errors, `*ApiKey*` as auth, `*Timeout*` as timeouts,
`*NotFound`/`*Expired`/`taskCancelled` as not found, `rateLimitExceeded` as rate limiting.

HTTP status: `None` marks a task *outcome* (the request was fine; the task failed, was cancelled,
or is still running): reported with 200, because the SDKs retry 5xx, 408 and 429 by resubmitting
the same taskUUID, which could only earn a `conflictTaskUUID`.
"""

from __future__ import annotations

from typing import Any

from .errors import DEFAULT_DOCS_BASE, RunwareError, all_codes, documentation_url  # noqa: F401 - all_codes re-exported

#: code -> (HTTP status or None for a task outcome, description)
SERVER_ERROR_CODES: dict[str, tuple[int | None, str]] = {
    "missingApiKey": (401, "No API key: send 'Authorization: Bearer <key>' or a leading authentication task."),
    "invalidApiKey": (401, "The API key is not one this server knows."),
    "unsupportedContentType": (415, "The body must be sent as Content-Type: application/json."),
    "maxRequestSizeExceeded": (413, "The body (or WebSocket message) is over the server's size limit."),
    "invalidJSON": (400, "The body is not valid JSON."),
    "invalidRequestBody": (400, "The body is not a non-empty JSON array of task objects."),
    "missingTaskType": (400, "A task has no taskType."),
    "unsupportedTaskType": (400, "taskType is not one this server handles (see allowedValues)."),
    "conflictTaskUUID": (400, "A task with this taskUUID was already submitted; taskUUIDs are single-use."),
    "unsupportedModel": (400, "The model is a valid ACE-Step AIR but this server does not serve it."),
    "invalidMediaStorage": (400, "mediaStorage needs operation 'upload' (with media) or 'delete' (with a media UUID)."),
    "taskNotFound": (404, "No task with this taskUUID for this API key (unknown, expired or another key's)."),
    "mediaNotFound": (404, "No media with this UUID for this API key (unknown, deleted or expired)."),
    "mediaExpired": (404, "The media existed but its retention (ttl) is over."),
    "notFound": (404, "No such endpoint."),
    "methodNotAllowed": (405, "The endpoint does not take this HTTP method."),
    "rateLimitExceeded": (429, "The queue is full; retry with exponential backoff."),
    "serviceUnavailable": (503, "The server is shutting down or not ready; retry shortly."),
    "internalServerError": (500, "An unexpected server error (a bug: please report it)."),
    "urlNotAllowed": (400, "The URL's scheme, credentials or address is refused by the outbound policy."),
    "urlUnreachable": (None, "An input URL could not be fetched (connection failed)."),
    "urlTimeout": (None, "An input URL took longer than the outbound timeout."),
    "urlTooLarge": (None, "An input URL's body is over the size limit."),
    "urlHttpError": (None, "An input URL answered with an HTTP error status."),
    "invalidAudioEmpty": (None, "Input audio holds no samples."),
    "invalidAudioFormat": (None, "Input audio is not a decodable audio file."),
    "invalidAudioTooLong": (None, "Input audio is longer than the server's limit."),
    "invalidAudioTooLarge": (400, "Input audio is over the server's byte limit."),
    "inferenceError": (None, "Generation failed; the message says how."),
    "taskCancelled": (None, "The task was cancelled by its client."),
    "taskInterrupted": (None, "The server stopped twice while running the task; it is not retried again."),
    "syncWaitTimeout": (None, "A sync request's wait ran out; the task goes on: poll getResponse."),
    "uploadFailed": (None, "A result could not be PUT to uploadEndpoint; it stays retrievable here."),
}


class TaskFailure(RunwareError):
    """A task's own failure, as getResponse, sync replies and webhooks report it: `status: "error"`,
    HTTP 200 (the request that asked about it was fine)."""

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "status": "error"}


def server_error(code: str, message: str, *, parameter: str | list[str] | None = None, task_type: str | None = None,
                 task_uuid: str | None = None, docs_base: str = DEFAULT_DOCS_BASE, task_failure: bool = False,
                 http_status: int | None = None, **extra: Any) -> RunwareError:
    """A RunwareError for a server-side code. HTTP status: `http_status` if given; 200 for a task
    failure; else the code's documented status, 400 for an outcome code refused up front (e.g.
    empty audio found while accepting a task)."""
    default_status, _ = SERVER_ERROR_CODES.get(code, (400, ""))
    cls = TaskFailure if task_failure else RunwareError
    return cls(code, message, parameter=parameter, task_type=task_type, task_uuid=task_uuid,
               documentation=documentation_url(parameter, docs_base) if parameter else
               f"{docs_base.rstrip('/')}/docs/api#errors",
               http_status=http_status or (200 if task_failure else default_status or 400), **extra)

