"""Response items: how a task's state reads on the wire (sync replies, getResponse, webhooks, WS).

* A result item: `taskType`, `taskUUID` (the task's own, also in getResponse), `status:"success"`,
  `audioUUID`, exactly one of `audioURL` / `audioBase64Data` / `audioDataURI` (per `outputType`),
  `seed`, `cost` only with `includeCost`, and `uploadEndpoint` once the file was PUT there.
  When the 5 Hz LM planner ran, the extension `plannedMetadata` (`planned_metadata`) says what it
  decided: the metadata the DiT used (the user's values where given).
  Status and an output field together make every client see it as done: the TS SDK counts
  `status == "success"`, the Python SDK looks for an `...URL`/`...Base64Data`/`...DataURI` key,
  the old SDK for `audioUUID`.
* While running (or queued, or uploading): one item `status:"processing"` with `progress` 0-100,
  and no `audioUUID` (the old SDK would count it as a result). Cantata extensions on it:
  `queuePosition` while queued (0: next in line) and `eta` (seconds to done) when there is
  something to go on; both left out otherwise (`queue_extension`).
* Failures go to `errors` with `status:"error"` and the task's taskType/taskUUID.
* getResponse is cumulative and stable: results in index order, every time.

A task counts as settled (what sync waits for) when it is finished and none of its upload PUTs
is still pending: with `uploadEndpoint` the file goes out before the client hears it is done.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

from ..errors import CantataError
from ..jobs.engine import TaskView
from ..jobs.store import CANCELLED, ERROR, SUCCESS, ResultRecord
from ..logfmt import kv
from .cost import CostModel
from .errors import RunwareError, runware_error

#: `PlannedMetadata` fields -> the wire's names (those of the request's own fields where one exists).
PLANNED_WIRE_NAMES = {"bpm": "bpm", "keyscale": "keyScale", "timesignature": "timeSignature", "duration": "duration",
                      "language": "vocalLanguage", "caption": "caption", "codes": "audioCodes"}


def planned_metadata(planned: dict[str, Any]) -> dict[str, Any]:
    """The stored planner metadata as `plannedMetadata`: bpm, keyScale, timeSignature, duration,
    vocalLanguage (the planner's guess), caption (only when it replaced positivePrompt) and
    audioCodes (codes written per result; 0 without `thinking`). Unknown values are left out."""
    return {wire: planned[name] for name, wire in PLANNED_WIRE_NAMES.items() if planned.get(name) is not None}

TASK_TYPE = "audioInference"
#: Where result files and uploads are served (`cantata.api.media`); the job layer knows media only
#: by UUID and extension.
MEDIA_ROUTE = "/v1/media/{name}"

log = logging.getLogger("cantata.api")


def url_path(media_id: str, ext: str) -> str:
    """Path of a media file under MEDIA_ROUTE (`audioURL`, `mediaURL`)."""
    return MEDIA_ROUTE.format(name=media_id + ext)


def ack(task_uuid: str) -> dict[str, Any]:
    return {"taskType": TASK_TYPE, "taskUUID": task_uuid}


def settled(view: TaskView) -> bool:
    return view.finished and not any(d.kind == "upload" and d.status == "pending" for d in view.deliveries)


def queue_extension(view: TaskView) -> dict[str, Any]:
    """`queuePosition` and `eta` of a processing item, from the engine's estimate; a value the
    engine has nothing for is left out rather than sent as null, so clients need no null checks."""
    fields = {"queuePosition": view.queue_position, "eta": view.eta_seconds}
    return {name: value for name, value in fields.items() if value is not None}


class Renderer:
    def __init__(self, *, base_url: str, result_bytes: Callable[[ResultRecord], bytes], costs: CostModel) -> None:
        self.base_url = base_url.rstrip("/")
        self.result_bytes = result_bytes  # the engine's reader of a result's file
        self.costs = costs

    def items(self, view: TaskView) -> tuple[list[dict[str, Any]], list[RunwareError]]:
        """The task's data items and errors as of now (reads media files for base64 outputs)."""
        if view.status in (ERROR, CANCELLED):
            return [], [self.task_error(view)]
        if view.status != SUCCESS or not settled(view):
            progress = 99 if view.status == SUCCESS else view.progress  # uploading
            return [{**ack(view.uuid), "status": "processing", "progress": progress, **queue_extension(view)}], []
        data = [self.result_item(view, r) for r in view.results]
        errors = [self.upload_error(view, d.result_idx, d.last_error) for d in view.deliveries
                  if d.kind == "upload" and d.status == "failed"]
        return data, errors

    def items_or_failure(self, view: TaskView) -> tuple[list[dict[str, Any]], list[RunwareError]]:
        """`items`, or, if rendering them fails (a bug, a result file gone missing), an error for
        this task alone. Used where the task was already accepted: that reply must report it, never
        turn into a 5xx that a client retries into `conflictTaskUUID`."""
        try:
            return self.items(view)
        except Exception:
            log.exception(kv("render.failed", taskUUID=view.uuid))
            return [], [runware_error(CantataError(
                "internalServerError", "The task was accepted but its results could not be rendered; poll "
                "getResponse with this taskUUID."), task_type=TASK_TYPE, task_uuid=view.uuid,
                docs_base=self.base_url, http_status=200)]

    def result_item(self, view: TaskView, result: ResultRecord) -> dict[str, Any]:
        task = view.task
        item: dict[str, Any] = {**ack(view.uuid), "status": "success", "audioUUID": result.audio_uuid}
        if task.output_type == "URL":
            item["audioURL"] = self.base_url + url_path(result.audio_uuid, result.ext)
        else:
            encoded = base64.b64encode(self.media_bytes(result)).decode("ascii")
            if task.output_type == "base64Data":
                item["audioBase64Data"] = encoded
            else:
                item["audioDataURI"] = f"data:{result.mime};base64,{encoded}"
        item["seed"] = result.seed
        if result.planned is not None:
            item["plannedMetadata"] = planned_metadata(result.planned)
        if task.include_cost:
            item["cost"] = self.costs.actual(view.model, result.gpu_seconds)
        if any(d.kind == "upload" and d.result_idx == result.idx and d.status == "done" for d in view.deliveries):
            item["uploadEndpoint"] = task.upload_endpoint
        return item

    def task_error(self, view: TaskView) -> RunwareError:
        error = CantataError.from_record(view.error) if view.error else CantataError("inferenceError", "the task failed")
        return runware_error(error, task_type=TASK_TYPE, task_uuid=view.uuid, docs_base=self.base_url,
                             task_failure=True)

    def upload_error(self, view: TaskView, idx: int | None, detail: str | None) -> RunwareError:
        result = view.results[idx] if idx is not None and idx < len(view.results) else None
        what = f"result {result.audio_uuid}" if result else "the result"
        return runware_error(CantataError(
            "uploadFailed", f"could not upload {what} to uploadEndpoint ({detail or 'no answer'}); it is still "
            "available from this server", parameter="uploadEndpoint"), task_type=TASK_TYPE, task_uuid=view.uuid,
            docs_base=self.base_url, task_failure=True)

    def webhook_payload(self, view: TaskView, idx: int | None) -> dict[str, Any]:
        """One webhook body: a result item, or the task's error."""
        if idx is None:
            return {"errors": [self.task_error(view).to_dict()]}
        return {"data": [self.result_item(view, view.results[idx])]}

    def media_bytes(self, result: ResultRecord) -> bytes:
        return self.result_bytes(result)

