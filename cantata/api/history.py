"""`taskHistory` (a Cantata extension task): one API key's `audioInference` tasks, newest first,
a page at a time, and deleting one of them. Cantata Studio's history is this task, so any client
can have the same library.

Request: `{"taskType": "taskHistory", "taskUUID", "operation"?, ...}`
* `operation: "list"` (the default), `limit` (1..100, default 20), `cursor` (the `nextCursor` of
  the previous page; absent: the newest page). Reply: `{"taskType", "taskUUID", "operation",
  "items": [...], "nextCursor"}`; each item is `{"taskUUID", "status"` (queued, running, success,
  error, cancelled)`, "progress", "createdAt", "finishedAt", "request"` (as sent, inline audio
  replaced)`, "results": [{"audioUUID", "audioURL", "seed"}], "error"?}`. `nextCursor` is null on
  the last page. Result URLs are given whatever the task's outputType (every result is a file).
* `operation: "delete"`, `target` (the taskUUID of a finished task of this key): forgets the task
  and deletes its result files. Reply: `{"taskType", "taskUUID", "operation", "target"}`.

A bad field is `invalidTaskHistory` naming it, an unknown key `unsupportedParameter`; an unknown
target (or another key's) is `taskNotFound`, a queued or running one `conflictTaskNotFinished`.
Tasks stay listed until their retention is over (the server's result ttl), restarts included.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..jobs.engine import Engine, TaskNotFinished, TaskView
from .errors import RunwareError
from .responses import Renderer, url_path
from .validation import _check_keys, validate_task_uuid

TASK_TYPE = "taskHistory"
OPERATIONS = ("list", "delete")
MAX_LIMIT, DEFAULT_LIMIT = 100, 20
MAX_CURSOR_CHARS = 20
MAX_TARGET_CHARS = 100  # a taskUUID is 36; anything longer is no task of ours
KEYS = {"list": ("taskType", "taskUUID", "operation", "limit", "cursor"),
        "delete": ("taskType", "taskUUID", "operation", "target")}


async def task_history(task: dict, key_id: str, engine: Engine, renderer: Renderer, *, dry_run: bool = False
                       ) -> dict[str, Any]:
    """One validated `taskHistory` task -> its reply item; a `RunwareError` names the bad field."""
    task_uuid = validate_task_uuid(task.get("taskUUID"))
    operation = task.get("operation", "list")
    if operation not in OPERATIONS:
        raise RunwareError("invalidTaskHistory", f"operation must be one of {', '.join(OPERATIONS)}.",
                           parameter="operation", type="string", allowed_values=",".join(f"'{o}'" for o in OPERATIONS))
    _check_keys(task, KEYS[operation], "", TASK_TYPE)
    reply = {"taskType": TASK_TYPE, "taskUUID": task_uuid, "operation": operation}
    if operation == "delete":
        target = task.get("target")
        if not (isinstance(target, str) and 0 < len(target) <= MAX_TARGET_CHARS):
            raise RunwareError("invalidTaskHistory", "delete needs target: the taskUUID of the task to delete.",
                               parameter="target", type="string")
        if not dry_run:
            await _delete(engine, target, key_id)
        return {**reply, "target": target, **({"dryRun": True} if dry_run else {})}
    limit = task.get("limit", DEFAULT_LIMIT)
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise RunwareError("invalidTaskHistory", f"limit must be an integer between 1 and {MAX_LIMIT}.",
                           parameter="limit", type="integer")
    before = _cursor(task.get("cursor"))
    page = await asyncio.to_thread(engine.history, key_id, before_seq=before, limit=limit + 1)
    more = len(page) > limit
    page = page[:limit]
    return {**reply, "items": [_item(view, renderer) for _, view in page],
            "nextCursor": str(page[-1][0]) if more else None}


async def _delete(engine: Engine, target: str, key_id: str) -> None:
    try:
        found = await asyncio.to_thread(engine.delete_task, target, key_id=key_id)
    except TaskNotFinished:
        raise RunwareError("conflictTaskNotFinished", f"Task {target} is still queued or running; cancel it "
                           "first (taskType 'cancel'), then delete it.", parameter="target") from None
    if not found:
        raise RunwareError("taskNotFound", f"No task {target} for this API key.", parameter="target")


def _cursor(value: Any) -> int | None:
    """The opaque `nextCursor` of an earlier page (a submission sequence number, written as a string)."""
    if value is None:
        return None
    if not (isinstance(value, str) and 0 < len(value) <= MAX_CURSOR_CHARS and value.isascii() and value.isdigit()):
        raise RunwareError("invalidTaskHistory", "cursor must be the nextCursor of an earlier taskHistory page.",
                           parameter="cursor", type="string")
    return int(value)


def _item(view: TaskView, renderer: Renderer) -> dict[str, Any]:
    item: dict[str, Any] = {
        "taskUUID": view.uuid, "status": view.status, "progress": view.progress, "createdAt": view.created_at,
        "finishedAt": view.finished_at, "request": view.request,
        "results": [{"audioUUID": r.audio_uuid, "audioURL": renderer.base_url + url_path(r.audio_uuid, r.ext),
                     "seed": r.seed} for r in view.results]}
    if view.error is not None:
        item["error"] = renderer.task_error(view).to_dict()
    return item
