"""The job engine: the job layer's one entry point for the API, and the owner of its lifecycle.

Layering (data flows one way):

    API (protocol, envelopes) -> Engine.submit(validated task) -> Store (durable) + Scheduler (what
    next) -> ModelWorker (pipeline) -> Engine.complete/fail -> Store -> events -> API responses

The engine accepts tasks (inputs settled, seed fixed, row written, queued), cancels them, answers
status queries with plain `TaskView`s, persists what workers report and notifies listeners of
every change. It knows nothing of HTTP or WebSocket envelopes.

Roles: the same engine serves every process of a deployment. A single server (`cantata serve`)
has the API, the store and the workers in one process and queues in memory (`Scheduler`). Where
processes share a store (`--store postgresql://…`, or one worker process per device on one SQLite
file), the engine is given a `StoreQueue` instead: its workers claim batches from the store under
leases, an API-only node (`serve --no-worker`) runs no workers at all, and an `EventBus` carries
"look again" hints between processes (`events`).

Durability rules:
* Start-up of a single server: queued tasks are queued again; a task found `running` died with
  the process. It is retried once (its first start counted an attempt); found running a second
  time it fails with `taskInterrupted`, so a task that crashes the server cannot crash it forever.
* Shared store: nobody may assume a running task is dead at start-up (another process may run
  it). Every process sweeps leases instead (the store lets one sweep at a time): a running task
  whose lease lapsed is put back in the queue with its attempt counted, or fails with
  `taskInterrupted` once it had `MAX_ATTEMPTS`. A worker renews its leases every
  `lease_seconds / 3` and writes every outcome under its lease, so a worker that froze past its
  lease cannot overwrite the retry's result; a lease it cannot renew (cancelled elsewhere, swept)
  stops its work on that task at the next step.
* Shutdown: stop accepting and picking work, let the running batch finish within the grace
  period, else stop it at its next step and put its tasks back in the queue without counting
  the attempt.
* Expiry: finished tasks, results and uploads are kept for `result_ttl` (URL results for their
  `ttl` when given); a sweeper thread deletes expired files and rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from ..errors import CantataError
from ..logfmt import kv
from ..pipeline.enhance import enhance_prompt
from ..planner.checkpoint import served_planner
from . import backends
from .inputs import InputAudio, InputError, is_url
from .batching import queued_task
from .mapping import base_seed
from .media import MediaStorage
from .claims import StoreQueue
from .events import EventBus, InProcessBus
from .scheduler import QueuedTask, QueueFull, Scheduler
from .store import (CANCELLED, ERROR, QUEUED, RUNNING, SUCCESS, TERMINAL, Delivery, DuplicateTask, MediaRecord,
                    NewDelivery, NewResult, ResultRecord)
from .store_contract import JobStore
from .task import AudioInferenceTask
from .worker import EncodedAudio, Job, ModelWorker

log = logging.getLogger("cantata.engine")

#: Starts a task may have; found running at start-up after this many, it fails.
MAX_ATTEMPTS = 2
TASK_INTERRUPTED = "taskInterrupted"
TASK_CANCELLED = "taskCancelled"
DEMO_NOTE = "demo checkpoints have random weights: the audio is noise"
_PROGRESS_EVERY = 0.25  # seconds between progress notifications
_PERSIST_EVERY = 1.0  # seconds between progress writes to the store

__all__ = ["Engine", "TaskView", "Event", "QueueFull", "DuplicateTask", "NotServed", "ShuttingDown",
           "PlannerNotReady", "EnhancedPrompts", "InputError", "TASK_INTERRUPTED", "TASK_CANCELLED", "MAX_ATTEMPTS"]


class NotServed(Exception):
    """The task's model is valid but this server does not serve it."""


class ShuttingDown(Exception):
    """The server is stopping and takes no new work."""


class TaskNotFinished(Exception):
    """A queued or running task cannot be deleted from the history."""


class PlannerNotReady(Exception):
    """No loaded model worker carries the planner (none is served, or its model is still loading)."""


@dataclass(frozen=True)
class EnhancedPrompts:
    """A promptEnhance answer: the texts, the model whose worker planned them, and the seconds spent."""

    texts: list[str]
    model: str
    seconds: float


class Event(NamedTuple):
    task_uuid: str
    kind: str  # queued | progress | finished | delivery


@dataclass(frozen=True)
class TaskView:
    """A task as the API layer sees it: plain values, no tensors, no envelopes."""

    uuid: str
    key_id: str
    model: str
    status: str
    progress: int
    attempts: int
    task: AudioInferenceTask
    request: dict[str, Any]
    error: dict[str, Any] | None
    results: list[ResultRecord]
    deliveries: list[Delivery]
    created_at: float
    finished_at: float | None
    #: Queued: how many queued tasks of its model were submitted before it (0: next in line).
    queue_position: int | None = None
    #: Seconds until it is expected to finish: queued, from its position and the model's recent
    #: task times; running, from its progress so far. None when there is nothing to go on.
    eta_seconds: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


class Engine:
    def __init__(self, *, store: JobStore, storage: MediaStorage, scheduler: Scheduler | StoreQueue,
                 inputs: InputAudio, loader: Callable[[str], object], models: tuple[str, ...], result_ttl: float,
                 sweep_interval: float = 60.0, shutdown_grace: float = 30.0, demo: bool = False,
                 download_threads: int = 2, clock: Callable[[], float] = time.time,
                 planner: str | None = None, run_workers: bool = True, bus: EventBus | None = None) -> None:
        """`scheduler`: the in-memory `Scheduler` of a single server, or a `StoreQueue` over a
        shared store; `run_workers` False makes an API-only node; `bus` carries events between
        processes (see the module docstring)."""
        self.store = store
        self.storage = storage
        self.scheduler = scheduler
        self.inputs = inputs
        self.models = models
        self.result_ttl = result_ttl
        self.sweep_interval = sweep_interval
        self.shutdown_grace = shutdown_grace
        self.demo = demo
        self.planner = planner  # the 5 Hz LM planner every worker's pipeline carries (None: none)
        self.clock = clock
        self.accepting = False
        self.shared = isinstance(scheduler, StoreQueue)
        self.bus = bus or InProcessBus()
        self.workers = {m: ModelWorker(m, loader=loader, scheduler=scheduler, sink=self, inputs=inputs, demo=demo)
                        for m in models} if run_workers else {}
        self._downloads = ThreadPoolExecutor(download_threads, thread_name_prefix="cantata-download")
        self._listeners: list[Callable[[Event], None]] = []
        self._cancel_requested: set[str] = set()
        self._progress: dict[str, int] = {}
        self._progress_times: dict[str, tuple[float, float]] = {}  # uuid -> (last notified, last persisted)
        self._task_seconds: dict[str, float] = {}  # model -> moving average of a task's run time (ETAs)
        self._running: dict[str, str] = {}  # uuid -> model of the tasks this process's workers run
        self._lock = threading.Lock()
        self._stop_sweeper = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="cantata-sweeper", daemon=True)
        self._leases = threading.Thread(target=self._lease_loop, name="cantata-leases", daemon=True)

    @classmethod
    def from_config(cls, config, loader: Callable[[str], object] | None = None) -> "Engine":
        """An engine over the configured store and media (`backends`), loading pipelines from
        `config.checkpoints`; its role decides whether it runs workers."""
        store = backends.open_store(config)
        storage = backends.open_media(config)
        inputs = InputAudio(store, storage, config.outbound_policy(), max_bytes=config.max_input_audio_bytes,
                            max_seconds=config.max_input_audio_seconds, retention=config.result_ttl)
        return cls(store=store, storage=storage, scheduler=backends.work_source(config, store), inputs=inputs,
                   loader=loader or pipeline_loader(config), models=config.models,
                   result_ttl=config.result_ttl, sweep_interval=config.sweep_interval,
                   shutdown_grace=config.shutdown_grace, demo=config.demo,
                   planner=served_planner(config.checkpoints, config.planner), run_workers=config.runs_workers,
                   bus=backends.event_bus(config))

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.recover()
        self.bus.start(self._remote_event)
        for worker in self.workers.values():
            worker.start()
        self._sweeper.start()
        if self.shared:
            self._leases.start()
        self.accepting = True
        if self.demo:
            log.warning(kv("demo", note=DEMO_NOTE))

    def recover(self) -> None:
        """Put the store's unfinished tasks back to work after a restart (see module docstring).
        On a shared store only the input downloads of queued tasks are resumed (idempotent; the
        node that started them may be gone): running tasks are the lease sweeper's business."""
        for record in () if self.shared else self.store.tasks_with_status(RUNNING):
            if record.attempts >= MAX_ATTEMPTS:
                self._finish_error(record.uuid, TASK_INTERRUPTED, "the server stopped twice while running this "
                                   "task, so it is not retried again", from_statuses=(RUNNING,))
            else:
                self.store.requeue(record.uuid, uncount_attempt=False)
                log.warning(kv("task.retry", taskUUID=record.uuid, reason="server stopped while it ran"))
        for record in self.store.tasks_with_status(QUEUED):
            task = record.task
            pending = [u for u in _input_refs(task) if is_url(u) and u not in record.inputs]
            self._queue(task, record.key_id, record.seq, ready=not pending, force=True)
            if pending:
                self._downloads.submit(self._download, task, record.key_id, pending)

    def stop(self, grace: float | None = None) -> None:
        """Stop taking work; give the running batch `grace` seconds, then stop it and requeue it."""
        self.accepting = False
        self.scheduler.close()
        deadline = time.monotonic() + (self.shutdown_grace if grace is None else grace)
        for worker in self.workers.values():
            if worker.is_alive():
                worker.join(max(0.0, deadline - time.monotonic()))
        for worker in self.workers.values():
            if worker.is_alive():
                log.warning(kv("shutdown.abort", model=worker.model, note="grace period over: batch requeued"))
                worker.abort()
                worker.join(30)
        self._downloads.shutdown(wait=False, cancel_futures=True)
        self._stop_sweeper.set()
        for thread in (self._sweeper, self._leases):
            if thread.is_alive():
                thread.join(5)
        self.bus.close()

    def readiness(self) -> dict[str, Any]:
        """`models`: each served model's state in this process; "remote" on an API-only node (the
        workers of other processes run it). `memory` and `speed`: each loaded model's memory tier
        and DiT speed switches."""
        models = {m: "ready" if w.loaded.is_set() else (f"failed: {w.load_error}" if w.load_error else "loading")
                  for m, w in self.workers.items()} if self.workers else {m: "remote" for m in self.models}
        alive = all(w.is_alive() for w in self.workers.values())
        loaded = {m: w.pipeline for m, w in self.workers.items() if w.loaded.is_set()}
        writable = self.store.writable() and self.storage.writable()
        return {"ready": self.accepting and alive and writable
                and all(v in ("ready", "remote") for v in models.values()),
                "models": models, "planner": self.planner, "workersAlive": alive, "storeWritable": writable,
                "accepting": self.accepting,
                "memory": {m: getattr(p, "memory_tier", None) for m, p in loaded.items()},
                "speed": {m: _speed_of(p) for m, p in loaded.items()}}

    # -- events ----------------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call `listener(Event)` on every change (from any thread; it must not block)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def notify(self, task_uuid: str, kind: str) -> None:
        """Tell this process's listeners and, through the bus, the other processes."""
        self._notify_here(task_uuid, kind)
        self.bus.publish(task_uuid, kind)

    def _remote_event(self, task_uuid: str, kind: str) -> None:
        """An event from another process: wake idle workers on new work, stop a task held here
        that was cancelled elsewhere, and pass it on to this process's listeners."""
        if kind == "queued":
            self.scheduler.mark_ready(task_uuid)
        elif kind == "finished" and self.shared and self.scheduler.lease(task_uuid) is not None:
            with self._lock:
                self._cancel_requested.add(task_uuid)
        self._notify_here(task_uuid, kind)

    def _notify_here(self, task_uuid: str, kind: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(Event(task_uuid, kind))
            except Exception:
                log.exception(kv("listener.failed", taskUUID=task_uuid))

    # -- API side ------------------------------------------------------------------------------

    def submit(self, task: AudioInferenceTask, *, key_id: str, request: dict[str, Any],
               ws_session: str | None = None) -> AudioInferenceTask:
        """Accept a validated task: settle its inputs, fix its seed, store and queue it. Returns the
        task as stored. `ws_session`: the WebSocket session waiting for its result, recorded so any
        node can resume that session. Raises ShuttingDown, NotServed, DuplicateTask, QueueFull or
        InputError."""
        if not self.accepting:
            raise ShuttingDown("the server is shutting down")
        if task.variant.name not in self.models:
            raise NotServed(task.variant.air)
        if self.store.get_task(task.task_uuid) is not None:
            raise DuplicateTask(task.task_uuid)
        if not self.scheduler.has_room():
            raise QueueFull(f"the queue is full ({self.scheduler.capacity} tasks)")
        audio = task.inputs.audio and self.inputs.accept(task.inputs.audio, owner=key_id, parameter="inputs.audio")
        refs = tuple(self.inputs.accept(r, owner=key_id, parameter="inputs.referenceAudios")
                     for r in task.inputs.reference_audios)
        task = dataclasses.replace(task, seed=base_seed(task),
                                   inputs=dataclasses.replace(task.inputs, audio=audio or None, reference_audios=refs))
        seq = self.store.insert_task(uuid=task.task_uuid, key_id=key_id, model=task.variant.name,
                                     task_json=task.to_json(), request_json=json.dumps(_slim(request, task)),
                                     inputs={}, now=self.clock(), ws_session=ws_session)
        pending = [u for u in _input_refs(task) if is_url(u)]
        self._queue(task, key_id, seq, ready=not pending, force=True)
        if pending:
            self._downloads.submit(self._download, task, key_id, pending)
        log.info(kv("task.accepted", taskUUID=task.task_uuid, key=key_id, model=task.variant.name,
                    kind=task.task_kind, duration=task.duration, steps=task.steps, results=task.number_results,
                    delivery=task.delivery_method))
        self.notify(task.task_uuid, "queued")
        return task

    def view(self, task_uuid: str, key_id: str | None = None) -> TaskView | None:
        """The task, or None when unknown or owned by another key (the two look the same)."""
        record = self.store.get_task(task_uuid)
        if record is None or (key_id is not None and record.key_id != key_id):
            return None
        progress = record.progress
        if record.status == RUNNING:
            progress = max(progress, self._progress.get(task_uuid, 0))
        position = self.scheduler.position(task_uuid) if record.status == QUEUED else None
        return TaskView(
            uuid=record.uuid, key_id=record.key_id, model=record.model, status=record.status, progress=progress,
            attempts=record.attempts, task=record.task, request=record.request, error=record.error,
            results=self.store.results(task_uuid), deliveries=self.store.deliveries(task_uuid),
            created_at=record.created_at,
            finished_at=record.finished_at, queue_position=position,
            eta_seconds=self._eta(record, progress, position))

    def _eta(self, record, progress: int, position: int | None) -> float | None:
        if record.status == RUNNING and record.started_at is not None and progress > 0:
            elapsed = max(0.0, self.clock() - record.started_at)
            return round(elapsed * (100 - progress) / progress, 1)
        typical = self._task_seconds.get(record.model)
        if position is None or typical is None:
            return None
        running = [self._progress.get(u, 0) for u, m in list(self._running.items()) if m == record.model]
        left_of_running = typical * (100 - max(running)) / 100 if running else 0.0  # one batch runs per model
        return round(left_of_running + (position + 1) * typical, 1)

    def cancel(self, task_uuid: str, key_id: str) -> TaskView | None:
        """Cancel a queued or running task (a running batch stops at its next step, or drops this
        task's results when other tasks share it). Finished tasks are left as they are."""
        record = self.store.get_task(task_uuid)
        if record is None or record.key_id != key_id:
            return None
        if record.status in (QUEUED, RUNNING):
            with self._lock:
                self._cancel_requested.add(task_uuid)
            queued = self.scheduler.remove(task_uuid)
            self._finish_error(task_uuid, TASK_CANCELLED, "the task was cancelled at the client's request",
                               status=CANCELLED)
            if queued:  # no worker holds it, so none will report back
                self._forget(task_uuid)
        return self.view(task_uuid, key_id)

    def ws_session_tasks(self, key_id: str, ws_session: str, *, finished_since: float) -> list[str]:
        """The tasks a resumed WebSocket session may still be owed: those sent over it that are
        unfinished or finished since `finished_since`."""
        return [r.uuid for r in self.store.tasks_of_ws_session(key_id, ws_session)
                if r.finished_at is None or r.finished_at >= finished_since]

    def history(self, key_id: str, *, before_seq: int | None, limit: int) -> list[tuple[int, TaskView]]:
        """One page of a key's tasks, newest first, each with its `seq` (the next page is the one
        below the last `seq`): what the `taskHistory` extension lists."""
        records = self.store.tasks_of_key(key_id, before_seq=before_seq, limit=limit)
        pages = [(r.seq, self.view(r.uuid, key_id)) for r in records]
        return [(seq, view) for seq, view in pages if view is not None]  # None: deleted meanwhile

    def delete_task(self, task_uuid: str, *, key_id: str) -> bool:
        """Forget a finished task of this key with its result files. False when unknown or another
        key's; `TaskNotFinished` while it is queued or running (cancel it first: a worker holds it)."""
        view = self.view(task_uuid, key_id)
        if view is None:
            return False
        if not view.finished:
            raise TaskNotFinished(task_uuid)
        self.store.delete_task(task_uuid)
        for result in view.results:
            self.delete_media(result.audio_uuid, key_id=key_id)
        return True

    def exists(self, task_uuid: str) -> bool:
        """Whether a task with this UUID was ever accepted (and not yet forgotten), any key's."""
        return self.store.get_task(task_uuid) is not None

    def queue_depth(self, model: str | None = None) -> int:
        """Tasks waiting to run (of `model`)."""
        return self.scheduler.depth(model)

    # -- the delivery outbox (sent by the API nodes) ----------------------------------------------

    def claim_deliveries(self, *, now: float, hold_seconds: float, limit: int) -> list[Delivery]:
        return self.store.claim_deliveries(now=now, hold_seconds=hold_seconds, limit=limit)

    def delivery_attempted(self, delivery_id: int, *, now: float, error: str | None,
                           retry_at: float | None = None) -> None:
        self.store.delivery_attempted(delivery_id, now=now, error=error, retry_at=retry_at)

    def delivery_settled(self, delivery_id: int, status: str, *, now: float, error: str | None = None) -> None:
        self.store.delivery_settled(delivery_id, status, now=now, error=error)

    # -- media -----------------------------------------------------------------------------------

    def upload(self, data: bytes, mime: str | None, *, key_id: str) -> MediaRecord:
        return self.inputs.save_upload(data, mime, owner=key_id)

    def decode_inline(self, value: str, parameter: str) -> tuple[bytes, str | None]:
        """A base64 / data-URI audio value's bytes and declared MIME type (raises InputError)."""
        return self.inputs.decode_inline(value, parameter)

    def find_media(self, media_id: str) -> MediaRecord | None:
        """A stored upload or result file by its id (any owner's: ids are unguessable)."""
        return self.store.get_media(media_id)

    def open_media(self, record: MediaRecord, offset: int = 0) -> BinaryIO:
        """The file's bytes from `offset` as a stream (FileNotFoundError when the object is gone,
        `StorageUnavailable` when the storage cannot be reached)."""
        return self.storage.open(record.storage_key, offset)

    def media_link(self, record: MediaRecord, seconds: int) -> str | None:
        """A URL valid for `seconds` that serves the file without this server (a presigned S3 URL),
        or None when the storage was not configured to hand such links out."""
        return self.storage.presigned_url(record.storage_key, mime=record.mime, expires_in=seconds)

    def media_path(self, record: MediaRecord) -> Path | None:
        """The file on this machine's disk, when the storage keeps it there."""
        return self.storage.local_path(record.storage_key)

    def result_bytes(self, result: ResultRecord) -> bytes:
        """A result's encoded file (raises FileNotFoundError once it is gone)."""
        media = self.store.get_media(result.audio_uuid)
        if media is None:
            raise FileNotFoundError(result.audio_uuid)
        return self.storage.get(media.storage_key)

    def delete_media(self, media_id: str, *, key_id: str) -> bool:
        record = self.store.get_media(media_id)
        if record is None or record.owner != key_id:
            return False
        self.store.delete_media(media_id)
        self.storage.delete(record.storage_key)
        return True

    def enhance_prompt(self, prompt: str, *, versions: int, max_length: int) -> EnhancedPrompts:
        """promptEnhance on the planner of a loaded worker, run on that worker's thread between its
        batches (the API never touches the models). Blocks until done."""
        if not self.accepting:
            raise ShuttingDown()
        worker = next((w for w in self.workers.values()
                       if w.loaded.is_set() and getattr(w.pipeline, "planner", None) is not None), None)
        if worker is None:
            raise PlannerNotReady()

        def errand(pipeline, cancelled) -> tuple[list[str], float]:
            started = time.perf_counter()
            texts = enhance_prompt(pipeline.planner, prompt, versions=versions, max_length=max_length,
                                   cancelled=cancelled)
            return texts, time.perf_counter() - started

        texts, seconds = worker.run_errand(errand).result()
        return EnhancedPrompts(texts, worker.model, seconds)

    # -- JobSink: what workers report ----------------------------------------------------------

    def begin(self, batch: list[QueuedTask]) -> list[Job]:
        jobs = []
        now = self.clock()
        for queued in batch:
            started = self.scheduler.lease(queued.task_uuid) is not None if self.shared else \
                self.store.mark_running(queued.task_uuid, now)  # a claim started it already
            if self.is_cancelled(queued.task_uuid) or not started:
                self._forget(queued.task_uuid)
                continue
            record = self.store.get_task(queued.task_uuid)
            self._running[record.uuid] = record.model
            jobs.append(Job(uuid=record.uuid, task=record.task, inputs=record.inputs))
            log.info(kv("task.started", taskUUID=record.uuid, model=record.model, attempt=record.attempts,
                        batch=len(batch)))
            self.notify(record.uuid, "progress")
        return jobs

    def report_progress(self, uuids: list[str], done: int, total: int) -> None:
        pct = min(99, int(100 * done / max(total, 1)))  # 100 only once the results are stored
        now = time.monotonic()
        for uuid in uuids:
            self._progress[uuid] = pct
            notified, persisted = self._progress_times.get(uuid, (0.0, 0.0))
            if now - persisted >= _PERSIST_EVERY and not self.shared:  # shared: written with the lease
                self.store.set_progress(uuid, pct)
                persisted = now
            if now - notified >= _PROGRESS_EVERY or done == total:
                self.notify(uuid, "progress")
                notified = now
            self._progress_times[uuid] = (notified, persisted)

    def complete(self, job: Job, seeds: list[int], audio: list[EncodedAudio], gpu_seconds: float,
                 planned: dict[str, Any] | None = None) -> None:
        """`planned`: what the planner decided for the task (`PlannedMetadata` as a dict), stored with
        each result."""
        task = job.task
        now = self.clock()
        keep = task.ttl if (task.output_type == "URL" and task.ttl) else self.result_ttl
        per_item = gpu_seconds / max(len(audio), 1)
        results = []
        for idx, (seed, enc) in enumerate(zip(seeds, audio)):
            audio_uuid = str(uuidlib.uuid4())
            key = self.storage.put(audio_uuid, enc.ext, enc.data)
            results.append(NewResult(idx=idx, audio_uuid=audio_uuid, seed=seed, storage_key=key, ext=enc.ext,
                                     mime=enc.mime, size=len(enc.data), gpu_seconds=per_item,
                                     expires_at=now + keep, planned=planned))
        record = self.store.get_task(job.uuid)
        if record is not None and record.started_at is not None:
            took = max(0.0, now - record.started_at)
            before = self._task_seconds.get(record.model)
            self._task_seconds[record.model] = took if before is None else 0.8 * before + 0.2 * took
        deliveries = [NewDelivery("upload", task.upload_endpoint, r.idx) for r in results if task.upload_endpoint]
        deliveries += [NewDelivery("webhook", task.webhook_url, r.idx) for r in results if task.webhook_url]
        ok = self.store.finish(job.uuid, SUCCESS, now=now, expires_at=now + self.result_ttl, results=results,
                               owner=record.key_id if record else "", deliveries=deliveries, from_statuses=(RUNNING,),
                               **self._fence(job.uuid))
        if not ok:  # cancelled (or swept) while it ran: its files have no row to expire with
            for r in results:
                self.storage.delete(r.storage_key)
            self._forget(job.uuid)
            return
        log.info(kv("task.finished", taskUUID=job.uuid, status=SUCCESS, results=len(results),
                    seeds=",".join(map(str, seeds)), gpu_seconds=round(gpu_seconds, 3),
                    format=task.output_format, demo=self.demo or None, note=DEMO_NOTE if self.demo else None))
        self._forget(job.uuid)
        self.notify(job.uuid, "finished")

    def fail(self, uuid: str, code: str, message: str, parameter: str | None = None) -> None:
        self._finish_error(uuid, code, message, parameter=parameter, **self._fence(uuid))

    def cancelled(self, uuid: str) -> None:
        """A worker stopped or dropped a cancelled task (marked cancelled by `cancel`, on this node
        or another, or swept away from this worker after it lost its lease)."""
        log.info(kv("task.stopped", taskUUID=uuid, reason="cancelled or no longer held by this worker"))
        self._forget(uuid)

    def interrupted(self, uuids: list[str]) -> None:
        """A batch stopped by shutdown: back to queued, this start not counted."""
        for uuid in uuids:
            self.store.requeue(uuid, uncount_attempt=True, **self._fence(uuid))
            self._forget(uuid)
            log.warning(kv("task.requeued", taskUUID=uuid, reason="shutdown"))

    def is_cancelled(self, uuid: str) -> bool:
        with self._lock:
            return uuid in self._cancel_requested

    # -- internals -------------------------------------------------------------------------------

    def _queue(self, task: AudioInferenceTask, key_id: str, seq: int, *, ready: bool, force: bool) -> None:
        self.scheduler.add(queued_task(task, key_id=key_id, seq=seq, ready=ready), force=force)

    def _download(self, task: AudioInferenceTask, key_id: str, urls: list[str]) -> None:
        """Fetch a queued task's input URLs into media; then it may run."""
        for url in urls:
            parameter = "inputs.audio" if url == task.inputs.audio else "inputs.referenceAudios"
            try:
                media = self.inputs.download(url, owner=key_id, parameter=parameter)
            except InputError as exc:
                self.scheduler.remove(task.task_uuid)
                self._finish_error(task.task_uuid, exc.code, exc.message, parameter=exc.parameter,
                                   from_statuses=(QUEUED,))
                return
            except Exception as exc:  # never leave a task waiting on a download that died
                log.exception(kv("input.download_crashed", taskUUID=task.task_uuid))
                self.scheduler.remove(task.task_uuid)
                self._finish_error(task.task_uuid, "urlUnreachable", f"could not download {url}: {exc}",
                                   parameter=parameter, from_statuses=(QUEUED,))
                return
            self.store.set_input(task.task_uuid, url, media.id)
        self.scheduler.mark_ready(task.task_uuid)

    def _fence(self, uuid: str) -> dict[str, Any]:
        """The lease a shared-store write of a task this process runs must carry (fencing)."""
        return {"lease": self.scheduler.lease(uuid)} if self.shared else {}

    def _finish_error(self, uuid: str, code: str, message: str, *, parameter: str | None = None,
                      status: str = ERROR, from_statuses: tuple[str, ...] = (QUEUED, RUNNING),
                      **fence: Any) -> None:
        record = self.store.get_task(uuid)
        if record is None:
            return
        now = self.clock()
        error = CantataError(code, message, parameter=parameter).record()
        if self.store.finish(uuid, status, now=now, expires_at=now + self.result_ttl, error=error,
                             deliveries=_error_deliveries(record), from_statuses=from_statuses, **fence):
            log.info(kv("task.finished", taskUUID=uuid, status=status, code=code, message=message))
            self.notify(uuid, "finished")
        if status != CANCELLED:
            self._forget(uuid)

    def _forget(self, uuid: str) -> None:
        if self.shared:
            self.scheduler.release(uuid)
        self._progress.pop(uuid, None)
        self._running.pop(uuid, None)
        self._progress_times.pop(uuid, None)
        with self._lock:
            self._cancel_requested.discard(uuid)

    def sweep(self) -> None:
        """Delete expired media files and rows, then finished tasks past their retention."""
        now = self.clock()
        for media in self.store.expired_media(now):
            self.storage.delete(media.storage_key)
            self.store.delete_media(media.id)
        removed = self.store.delete_expired_tasks(now)
        if removed:
            log.info(kv("sweep", tasks_removed=removed))

    def _lease_loop(self) -> None:
        """Shared store: renew this process's leases every third of a lease (a lost one stops its
        task), and sweep lapsed leases of any process."""
        every = self.scheduler.lease_seconds / 3
        while not self._stop_sweeper.wait(every):
            try:
                for uuid in self.scheduler.keep_alive(self._progress.get):
                    log.warning(kv("lease.lost", taskUUID=uuid, note="cancelled or swept elsewhere: stopping it"))
                    with self._lock:
                        self._cancel_requested.add(uuid)
                self.sweep_leases()
            except Exception:
                log.exception(kv("lease.loop_failed"))

    def sweep_leases(self) -> None:
        now = self.clock()
        error = CantataError(TASK_INTERRUPTED, "the worker running this task stopped answering, "
                             f"{MAX_ATTEMPTS} times, so it is not retried again").record()
        outcome = self.store.sweep_leases(now, max_attempts=MAX_ATTEMPTS, error=error,
                                          expires_at=now + self.result_ttl, deliveries_for=_error_deliveries)
        for uuid in outcome.requeued:
            log.warning(kv("task.retry", taskUUID=uuid, reason="its worker's lease lapsed"))
            self.notify(uuid, "queued")
        for uuid in outcome.interrupted:
            log.warning(kv("task.finished", taskUUID=uuid, status=ERROR, code=TASK_INTERRUPTED))
            self.notify(uuid, "finished")

    def _sweep_loop(self) -> None:
        while not self._stop_sweeper.wait(self.sweep_interval):
            try:
                self.sweep()
            except Exception:
                log.exception(kv("sweep.failed"))


def _speed_of(pipeline) -> str | None:
    """The DiT's speed switches as one key=value line (`/ready`), None for a stand-in pipeline."""
    from ..models.speed.apply import speed_options

    transformer = getattr(getattr(pipeline, "dit", None), "transformer", None)
    return None if transformer is None else speed_options(transformer).describe()


def _error_deliveries(record) -> list[NewDelivery]:
    """What a task that ends in an error owes: one webhook carrying the error, when it has one."""
    url = record.task.webhook_url
    return [NewDelivery("webhook", url, None)] if url else []


def _input_refs(task: AudioInferenceTask) -> list[str]:
    return [r for r in (task.inputs.audio, *task.inputs.reference_audios) if r]


def _slim(request: dict[str, Any], task: AudioInferenceTask) -> dict[str, Any]:
    """The request as sent, with inline audio replaced by the media UUIDs it was stored as."""
    inputs = request.get("inputs")
    if not isinstance(inputs, dict):
        return request
    slim_inputs = dict(inputs)
    if task.inputs.audio:
        slim_inputs["audio"] = task.inputs.audio
    if task.inputs.reference_audios:
        slim_inputs["referenceAudios"] = list(task.inputs.reference_audios)
    return {**request, "inputs": slim_inputs}


def pipeline_loader(config) -> Callable[[str], object]:
    """Load a served model from the configured checkpoint root (downloading if allowed)."""
    def load(model: str):
        from ..models.device import resolve_device
        from ..models.speed.apply import speed_options
        from ..models.speed.memory import apply_tier, resolve_tier
        from ..pipeline import CantataPipeline

        tier = resolve_tier(config.memory, resolve_device(config.device), model)  # free memory before it loads
        pipeline = CantataPipeline.from_pretrained(config.checkpoints, model, device=config.device,
                                                   dtype=config.dtype, download=config.download,
                                                   planner=served_planner(config.checkpoints, config.planner))
        apply_tier(pipeline, tier)
        pipeline.adapter_cache.budget_bytes = config.lora_cache_mb * 2**20
        log.info(kv("model.memory", model=model, tier=tier, speed=speed_options(pipeline.dit.transformer).describe()))
        return pipeline
    return load
