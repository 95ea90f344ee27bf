"""One task object in, its reply out: the task types both transports (HTTP and WebSocket) share.

`Dispatcher.handle` never raises. Every failure becomes a `RunwareError` in the reply (a
`CantataError` raised by any layer below is translated here, by `runware_error`), scoped to
its task (taskType/taskUUID filled in when the client sent them), so one bad task never stops the
others in the same array. Authentication is the transports' job (they read the key before they
dispatch); an `authentication` task reaching here is a no-op.

Task types: `audioInference`, `getResponse`, `getTaskDetails`, `mediaStorage` (upload/delete of
input audio), `modelSearch` (served checkpoints and installed adapters), `promptEnhance` (the
planner's caption for a prompt, run on the worker that owns the planner), `ping`, and Cantata's `cancel` (`{"taskType":"cancel","taskUUID":<task>}`).
Cantata's `taskHistory` lists one key's tasks newest first and deletes them (cantata.api.history).
A sync `audioInference` reply is empty with `follow` set: the transport waits for the task and
renders its results; async ones (and those with a webhookURL) are acknowledged at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from .. import outbound
from ..errors import CantataError
from ..jobs.engine import DuplicateTask, Engine, NotServed, PlannerNotReady, QueueFull, ShuttingDown, TaskView
from ..jobs.media import is_media_id
from ..logfmt import kv
from .cost import CostModel
from .errors import RunwareError, documentation_url, runware_error
from .history import task_history
from .metrics import Metrics
from .model_search import catalogue_sources, model_search
from .prompt_enhance import reply_items, validate_prompt_enhance
from ..models.adapters.registry import LoraRegistry
from .responses import Renderer, ack, url_path
from ..limits import Limits
from .validation import validate_audio_inference, validate_task_uuid

log = logging.getLogger("cantata.api")

TASK_TYPES = ("audioInference", "getResponse", "getTaskDetails", "mediaStorage", "modelSearch", "promptEnhance",
              "cancel", "ping",
              "taskHistory", "authentication")


@dataclass(frozen=True)
class Caller:
    key_id: str
    transport: str  # http | ws
    dry_run: bool = False
    ws_session: str | None = None  # the WebSocket session the task came over (resumable on any node)


@dataclass
class Reply:
    data: list[dict[str, Any]] = field(default_factory=list)
    errors: list[RunwareError] = field(default_factory=list)
    follow: str | None = None  # a sync audioInference to wait for


class Dispatcher:
    def __init__(self, *, engine: Engine, renderer: Renderer, costs: CostModel, metrics: Metrics,
                 policy: outbound.OutboundPolicy, limits: Limits, base_url: str, loras: LoraRegistry) -> None:
        self.engine = engine
        self.renderer = renderer
        self.costs = costs
        self.metrics = metrics
        self.policy = policy
        self.limits = limits
        self.base_url = base_url
        self.loras = loras
        self.catalogue = catalogue_sources(engine.models, loras, engine.planner)
        self._handlers = {
            "audioInference": self._audio_inference, "getResponse": self._get_response,
            "getTaskDetails": self._get_task_details, "mediaStorage": self._media_storage,
            "modelSearch": self._model_search, "promptEnhance": self._prompt_enhance, "cancel": self._cancel,
            "ping": self._ping,
            "taskHistory": self._task_history, "authentication": self._noop,
        }

    async def handle(self, task: Any, caller: Caller) -> Reply:
        try:
            if not isinstance(task, dict):
                raise self.error("invalidTaskObject", "Each task must be a JSON object.")
            task_type = task.get("taskType")
            if task_type is None:
                raise self.error("missingTaskType", "taskType is required.", parameter="taskType")
            handler = self._handlers.get(task_type) if isinstance(task_type, str) else None
            if handler is None:
                raise self.error("unsupportedTaskType", f"taskType {task_type!r} is not supported here.",
                                 parameter="taskType", allowed_values=",".join(f"'{t}'" for t in TASK_TYPES))
            return await handler(task, caller)
        except CantataError as exc:
            err = runware_error(exc, docs_base=self.base_url)
            self._scope(err, task)
            self.metrics.count_error(err.code)
            return Reply(errors=[err])
        except Exception:  # a bug must cost one task its reply, not the whole request a 500
            log.exception(kv("dispatch.crashed", taskUUID=_uuid_of(task)))
            err = self.error("internalServerError", "An unexpected error occurred while handling this task.")
            self._scope(err, task)
            self.metrics.count_error(err.code)
            return Reply(errors=[err])

    def error(self, code: str, message: str, *, parameter: str | list[str] | None = None, **kw: Any) -> RunwareError:
        return runware_error(CantataError(code, message, parameter=parameter), docs_base=self.base_url, **kw)

    def _scope(self, err: RunwareError, task: Any) -> None:
        if err.documentation is None:
            err.documentation = documentation_url(err.parameter, self.base_url)
        if isinstance(task, dict):
            if err.task_type is None and isinstance(task.get("taskType"), str):
                err.task_type = task["taskType"][:64]
            if err.task_uuid is None:
                err.task_uuid = _uuid_of(task)

    # -- audioInference --------------------------------------------------------------------------

    async def _audio_inference(self, task: dict, caller: Caller) -> Reply:
        validated = validate_audio_inference(task, docs_base=self.base_url, limits=self.limits, loras=self.loras,
                                             planner=self.engine.planner)
        for parameter, url in (("webhookURL", validated.webhook_url), ("uploadEndpoint", validated.upload_endpoint)):
            if url is not None:
                await self._check_url(url, parameter)
        if validated.variant.name not in self.engine.models:
            raise self._not_served(validated.variant.air)
        if caller.dry_run:
            if self.engine.exists(validated.task_uuid):
                raise self._conflict(validated.task_uuid)
            return Reply(data=[{**ack(validated.task_uuid), "cost": self.costs.estimate(validated), "dryRun": True}])
        try:
            followed = not (validated.delivery_method == "async" or validated.webhook_url)
            stored = await asyncio.to_thread(self.engine.submit, validated, key_id=caller.key_id, request=task,
                                             ws_session=caller.ws_session if followed else None)
        except DuplicateTask:
            raise self._conflict(validated.task_uuid) from None
        except QueueFull as exc:
            raise self.error("rateLimitExceeded", f"{exc}; retry with exponential backoff.") from None
        except ShuttingDown:
            raise self.error("serviceUnavailable", "The server is shutting down; retry shortly.") from None
        except NotServed:
            raise self._not_served(validated.variant.air) from None
        if not followed:
            return Reply(data=[ack(stored.task_uuid)])
        return Reply(follow=stored.task_uuid)

    async def _check_url(self, url: str, parameter: str) -> None:
        """Refuse at submission a URL the outbound policy would refuse at delivery, its resolved
        host name included (`localhost`, `127.1`): the client hears it now, and nothing is queued."""
        try:
            await outbound.check_destination(url, self.policy)
        except outbound.OutboundError as exc:
            raise outbound.OutboundError(exc.code, f"{parameter}: {exc.message}", parameter=parameter) from None

    def _conflict(self, task_uuid: str) -> RunwareError:
        return self.error("conflictTaskUUID", f"taskUUID {task_uuid} was already used; send a new UUID v4 for "
                          "each task (poll getResponse to follow the existing one).", parameter="taskUUID")

    def _not_served(self, air: str) -> RunwareError:
        served = ", ".join(self.engine.models)
        return self.error("unsupportedModel", f"{air} is not served by this server (it serves: {served}).",
                          parameter="model")

    # -- polling, details, cancel ------------------------------------------------------------------

    async def _view(self, task: dict, caller: Caller) -> TaskView:
        task_uuid = validate_task_uuid(task.get("taskUUID"))
        view = await asyncio.to_thread(self.engine.view, task_uuid, caller.key_id)
        if view is None:
            raise self.error("taskNotFound", f"No task {task_uuid} for this API key.", parameter="taskUUID")
        return view

    async def _get_response(self, task: dict, caller: Caller) -> Reply:
        view = await self._view(task, caller)
        data, errors = await asyncio.to_thread(self.renderer.items, view)
        return Reply(data=data, errors=errors)

    async def _get_task_details(self, task: dict, caller: Caller) -> Reply:
        view = await self._view(task, caller)
        data, errors = await asyncio.to_thread(self.renderer.items, view)
        return Reply(data=[{"taskType": "getTaskDetails", "taskUUID": view.uuid, "request": [view.request],
                            "response": {"data": data, "errors": [e.to_dict() for e in errors]},
                            "status": view.status, "attempts": view.attempts}])

    async def _cancel(self, task: dict, caller: Caller) -> Reply:
        task_uuid = validate_task_uuid(task.get("taskUUID"))
        if caller.dry_run:
            return Reply(data=[{"taskType": "cancel", "taskUUID": task_uuid, "dryRun": True}])
        view = await asyncio.to_thread(self.engine.cancel, task_uuid, caller.key_id)
        if view is None:
            raise self.error("taskNotFound", f"No task {task_uuid} for this API key.", parameter="taskUUID")
        return Reply(data=[{"taskType": "cancel", "taskUUID": task_uuid, "status": view.status}])

    # -- mediaStorage ----------------------------------------------------------------------------

    async def _media_storage(self, task: dict, caller: Caller) -> Reply:
        task_uuid = validate_task_uuid(task.get("taskUUID"))
        operation, media = task.get("operation"), task.get("media", task.get("mediaUUID"))
        if operation not in ("upload", "delete") or not isinstance(media, str) or not media.strip():
            raise self.error("invalidMediaStorage", "mediaStorage needs operation 'upload' with media (a data URI, "
                             "base64 data or an http(s) URL) or operation 'delete' with media (a media UUID).",
                             parameter="operation" if operation not in ("upload", "delete") else "media")
        reply = {"taskType": "mediaStorage", "taskUUID": task_uuid, "operation": operation}
        if caller.dry_run:
            return Reply(data=[{**reply, "dryRun": True}])
        if operation == "delete":
            if not is_media_id(media) or not await asyncio.to_thread(self.engine.delete_media, media,
                                                                     key_id=caller.key_id):
                raise self.error("mediaNotFound", f"No media {media[:64]} for this API key.", parameter="media")
            return Reply(data=[{**reply, "mediaUUID": media.lower()}])
        record = await self._upload(media, caller)
        return Reply(data=[{**reply, "mediaUUID": record.id,
                            "mediaURL": self.base_url + url_path(record.id, record.ext)}])

    async def _upload(self, media: str, caller: Caller):
        try:
            if media[:8].lower().startswith(("http://", "https://")):
                data, mime = await outbound.fetch_bytes(media, self.policy)
            else:
                data, mime = self.engine.decode_inline(media, "media")
            return await asyncio.to_thread(self.engine.upload, data, mime, key_id=caller.key_id)
        except CantataError as exc:  # whatever failed to fetch, decode or store, the cause is `media`
            exc.parameter = "media"
            raise

    # -- promptEnhance ----------------------------------------------------------------------------

    async def _prompt_enhance(self, task: dict, caller: Caller) -> Reply:
        validated = validate_prompt_enhance(task)
        if self.engine.planner is None:
            raise self.error("unsupportedPromptEnhance", "promptEnhance is answered by the 5 Hz LM planner and "
                             "this server serves none; start it with a planner (--planner).", parameter="taskType")
        if caller.dry_run:
            return Reply(data=[{"taskType": "promptEnhance", "taskUUID": validated.task_uuid, "dryRun": True}])
        try:
            done = await asyncio.to_thread(self.engine.enhance_prompt, validated.prompt,
                                           versions=validated.versions, max_length=validated.max_length)
        except (PlannerNotReady, ShuttingDown):
            raise self.error("serviceUnavailable", "The planner is not loaded yet (or the server is stopping); "
                             "retry shortly.") from None
        cost = self.costs.actual(done.model, done.seconds) if validated.include_cost else None
        return Reply(data=reply_items(validated, done.texts, cost))

    # -- taskHistory -------------------------------------------------------------------------------

    async def _task_history(self, task: dict, caller: Caller) -> Reply:
        return Reply(data=[await task_history(task, caller.key_id, self.engine, self.renderer,
                                              dry_run=caller.dry_run)])

    # -- modelSearch -------------------------------------------------------------------------------

    async def _model_search(self, task: dict, caller: Caller) -> Reply:
        return Reply(data=[await asyncio.to_thread(model_search, task, self.catalogue)])

    # -- trivial ---------------------------------------------------------------------------------

    async def _ping(self, task: dict, caller: Caller) -> Reply:
        item = {"taskType": "ping", "pong": True}
        if isinstance(task.get("taskUUID"), str):
            item["taskUUID"] = task["taskUUID"]
        return Reply(data=[item])

    async def _noop(self, task: dict, caller: Caller) -> Reply:
        return Reply()


def _uuid_of(task: Any) -> str | None:
    uuid = task.get("taskUUID") if isinstance(task, dict) else None
    return uuid if isinstance(uuid, str) and len(uuid) <= 100 else None
