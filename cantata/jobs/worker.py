"""The model runner: one thread per served model keeps its pipeline resident and runs batches.

A worker only executes. It asks the scheduler for the next batch, asks the engine which of those
tasks may start (`JobSink.begin`), turns each into a `GenerationRequest` (input audio decoded
here, off the event loop), runs them through the pipeline, encodes every result as the client
asked and hands the files back to the engine (`complete` / `fail`). Persisting, notifying and
cancelling are the engine's business.

Batches: a batch arrives already compatible (the picker groups tasks by `pipeline.batch_key`, the
one rule the pipeline's `sample_batch` also checks) and is one `sample_batch` call. A batch of
several tasks whose sampling fails for any reason but cancellation (out of GPU memory together,
or one task's input the model cannot take) runs again one task at a time: every item of a batch
equals its solo run, so the batch-mates get exactly their results and only a task that fails
alone reports the error. GPU time is measured per call
(after a CUDA sync) and shared between its tasks in proportion to the results they asked for;
each task's own decode is added to its share.

Overlap: a batch is sampled here (`pipeline.sample_batch`: planner, conditioning, DiT steps);
decoding its latents (`pipeline.decode`), encoding the audio (MP3/OGG/FLAC, on the CPU) and
storing it run on a finisher thread while the worker goes on with the next batch's DiT steps. The
VAE decode joins the finisher only where the pipeline says it may run beside sampling
(`speed.memory.decode_beside_sampling`: the `high` tier; on a GPU on a CUDA stream of its own);
in the offloading tiers it runs here, between batches. One batch is finished at a time, in order: a batch is
handed over only once the previous batch's results are stored, which also bounds the latents and
audio held in memory to two batches. A task whose decode fails or is cancelled reports that
alone: its batch-mates' latents are theirs already.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..audio import codecs
from ..logfmt import kv
from ..pipeline.request import GenerationCancelled, GenerationFailed, GenerationRequest, GenerationResult
from .inputs import InputAudio, InputError
from .mapping import generation_request
from .scheduler import QueuedTask, Scheduler
from .task import AudioInferenceTask

log = logging.getLogger("cantata.worker")

INFERENCE_ERROR = "inferenceError"
#: Pipelines load one at a time: model construction on the meta device (accelerate's
#: init_empty_weights) patches torch globally, so two loads in parallel threads corrupt each other.
_LOAD_LOCK = threading.Lock()


@dataclass(frozen=True)
class Job:
    """A task the engine allowed to start, with the URL -> media id map of its downloaded inputs."""

    uuid: str
    task: AudioInferenceTask
    inputs: dict[str, str]


@dataclass(frozen=True)
class EncodedAudio:
    data: bytes
    ext: str
    mime: str


class JobSink(Protocol):
    """What a worker reports to (the engine)."""

    def begin(self, batch: list[QueuedTask]) -> list[Job]: ...
    def report_progress(self, uuids: list[str], done: int, total: int) -> None: ...
    def complete(self, job: Job, seeds: list[int], audio: list[EncodedAudio], gpu_seconds: float,
                 planned: dict[str, Any] | None = None) -> None: ...
    def fail(self, uuid: str, code: str, message: str, parameter: str | None = None) -> None: ...
    def cancelled(self, uuid: str) -> None: ...
    def interrupted(self, uuids: list[str]) -> None: ...
    def is_cancelled(self, uuid: str) -> bool: ...


def _free_gpu_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def encode_result(task: AudioInferenceTask, audio: torch.Tensor, sample_rate: int) -> EncodedAudio:
    """One [2, samples] result in the task's outputFormat and audioSettings."""
    fmt = task.output_format
    s = task.audio_settings
    data = codecs.encode(audio.numpy(), sample_rate, fmt, out_sample_rate=s.sample_rate if s else None,
                         channels=s.channels if s else None, bitrate_kbps=s.bitrate if s else None)
    return EncodedAudio(data=data, ext=codecs.FILE_EXTENSIONS[fmt], mime=codecs.MIME_TYPES[fmt])


class ModelWorker(threading.Thread):
    def __init__(self, model: str, *, loader: Callable[[str], object], scheduler: Scheduler, sink: JobSink,
                 inputs: InputAudio, demo: bool = False, poll_interval: float = 0.5) -> None:
        super().__init__(name=f"cantata-worker-{model}", daemon=True)
        self.model = model
        self.loader = loader
        self.scheduler = scheduler
        self.sink = sink
        self.inputs = inputs
        self.demo = demo
        self.poll_interval = poll_interval
        self.pipeline = None
        self.loaded = threading.Event()
        self.load_error: str | None = None
        self._abort = threading.Event()
        self._errands: queue.SimpleQueue[tuple[Callable[..., Any], Future]] = queue.SimpleQueue()
        self._finisher = ThreadPoolExecutor(1, thread_name_prefix=f"cantata-finish-{model}")
        self._finishing: Future | None = None  # the batch being encoded and stored

    def run_errand(self, errand: Callable[..., Any]) -> Future:
        """Have this worker's thread run `errand(pipeline, cancelled)` between two batches (work
        such as promptEnhance that needs the resident models but is no audio task); the future
        holds its result or exception. It starts within one poll interval when the worker idles,
        after the running batch otherwise."""
        future: Future = Future()
        self._errands.put((errand, future))
        return future

    def _waiting_errands(self) -> Iterator[tuple[Callable[..., Any], Future]]:
        """The errands queued now whose callers have not given up on them."""
        while True:
            try:
                errand, future = self._errands.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                yield errand, future

    def _run_errands(self) -> None:
        for errand, future in self._waiting_errands():
            try:
                future.set_result(errand(self.pipeline, self._abort.is_set))
            except BaseException as exc:  # the caller hears every failure; the worker goes on
                future.set_exception(exc)

    def _refuse_errands(self) -> None:
        """A worker that stops (or never loaded) fails what was still waiting, so no caller hangs."""
        for _, future in self._waiting_errands():
            future.set_exception(GenerationCancelled("the model worker stopped"))

    def abort(self) -> None:
        """Stop the running batch at its next step (shutdown past the grace period)."""
        self._abort.set()

    def run(self) -> None:
        try:
            with _LOAD_LOCK:
                self.pipeline = self.loader(self.model)
        except Exception as exc:  # a missing checkpoint must leave the server up and /ready false
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error(kv("model.load_failed", model=self.model, error=self.load_error))
            self._refuse_errands()
            return
        self.loaded.set()
        log.info(kv("model.loaded", model=self.model, demo=self.demo or None))
        while not self.scheduler.closed:
            self._run_errands()
            batch = self.scheduler.next_batch(self.model, timeout=self.poll_interval)
            if batch:
                self.run_batch(batch, overlap=True)
        self.wait_finished()
        self._refuse_errands()

    # -- one batch -------------------------------------------------------------------------------

    def run_batch(self, batch: list[QueuedTask], *, overlap: bool = False) -> None:
        """Run a batch; its results are stored when this returns, or with `overlap` (the worker's
        own loop) possibly later, while the next batch runs (module docstring)."""
        prepared: list[tuple[Job, GenerationRequest]] = []
        for job in self.sink.begin(batch):
            try:
                prepared.append((job, self._request(job)))
            except InputError as exc:
                self.sink.fail(job.uuid, exc.code, exc.message, exc.parameter)
        if prepared:
            self._generate(prepared)
        if not overlap:
            self.wait_finished()

    def wait_finished(self) -> None:
        """Block until the batch handed to the finisher is stored."""
        if self._finishing is not None:
            self._finishing.result()
            self._finishing = None

    def _request(self, job: Job) -> GenerationRequest:
        task = job.task

        def load(ref: str, parameter: str) -> torch.Tensor:
            media_id = job.inputs.get(ref, ref)  # URLs were downloaded into media after acceptance
            return torch.from_numpy(self.inputs.waveform(media_id, parameter=parameter))

        source = load(task.inputs.audio, "inputs.audio") if task.inputs.audio else None
        refs = [load(r, "inputs.referenceAudios") for r in task.inputs.reference_audios]
        return generation_request(task, source=source, references=refs)

    def _generate(self, group: list[tuple[Job, GenerationRequest]], progress_floor: float = 0.0) -> None:
        """Sample one group and hand it to the finisher; a group of several that fails runs again
        one task at a time, so only a task that fails alone gets the error (module docstring)."""
        uuids = [job.uuid for job, _ in group]
        progress = _Progress(self.sink, uuids, progress_floor)
        started = time.perf_counter()
        try:
            sampled = self._sample([request for _, request in group], uuids, progress)
        except GenerationCancelled:
            if self._abort.is_set():
                self.sink.interrupted(uuids)
            else:
                for uuid in uuids:
                    self.sink.cancelled(uuid)
            return
        except Exception as exc:  # any failure ends tasks, never the worker
            _free_gpu_memory()
            if len(group) > 1:
                log.warning(kv("batch.failed", model=self.model, tasks=",".join(uuids),
                               error=f"{type(exc).__name__}: {exc}", action="retry_each_alone"))
                for item in group:
                    self._generate([item], progress.reached)
                return
            self.sink.fail(uuids[0], INFERENCE_ERROR, self._failure_message(uuids[0], exc))
            return
        seconds = time.perf_counter() - started
        total_items = sum(len(s.seeds) for s in sampled) or 1
        finishes = [_Finish(job, item, seconds * len(item.seeds) / total_items)
                    for (job, _), item in zip(group, sampled)]
        if not self.pipeline.decode_beside_sampling:
            finishes = [finish for finish in finishes if self._decode(finish)]
        self.wait_finished()  # the previous batch's results are stored first
        self._finishing = self._finisher.submit(self._finish, finishes)

    def _finish(self, finishes: list[_Finish]) -> None:
        """Decode (if not done yet), encode and hand over each task's results (on the finisher
        thread; never raises)."""
        for finish in finishes:
            try:
                if finish.result is not None or self._decode(finish):
                    self._finish_one(finish)
            except Exception:  # a failing report must not lose the other tasks' results
                log.exception(kv("task.finish_failed", taskUUID=finish.job.uuid))

    def _decode(self, finish: _Finish) -> bool:
        """Latents -> audio for one task (False: it failed or was cancelled, and the sink was told
        so for that task alone)."""
        uuid = finish.job.uuid
        started = time.perf_counter()
        try:
            # The audio comes back on the CPU: the decode's GPU work is done when this returns.
            finish.result = self.pipeline.decode(finish.sampled, cancelled=lambda: self._task_stopped(uuid))
        except GenerationCancelled:
            self._report_stopped(uuid)
        except Exception as exc:
            _free_gpu_memory()
            self.sink.fail(uuid, INFERENCE_ERROR, self._failure_message(uuid, exc))
        finish.gpu_seconds += time.perf_counter() - started
        return finish.result is not None

    def _task_stopped(self, uuid: str) -> bool:
        return self._abort.is_set() or self.sink.is_cancelled(uuid)

    def _report_stopped(self, uuid: str) -> None:
        if self._abort.is_set():
            self.sink.interrupted([uuid])
        else:
            self.sink.cancelled(uuid)

    def _finish_one(self, finish: _Finish) -> None:
        job, result = finish.job, finish.result
        if self.sink.is_cancelled(job.uuid):
            self.sink.cancelled(job.uuid)
            return
        try:
            encoded = [encode_result(job.task, item, result.sample_rate) for item in result.audio]
        except Exception as exc:
            log.exception(kv("encode.failed", taskUUID=job.uuid))
            self.sink.fail(job.uuid, INFERENCE_ERROR, f"could not encode the result as {job.task.output_format}: {exc}")
            return
        planned = dataclasses.asdict(result.planned) if result.planned is not None else None
        self.sink.complete(job, result.seeds, encoded, finish.gpu_seconds, planned)

    def _failure_message(self, uuid: str, exc: Exception) -> str:
        """What a task that failed alone is told."""
        if isinstance(exc, torch.OutOfMemoryError):
            return "out of GPU memory for this task: ask for fewer results or a shorter duration"
        if isinstance(exc, GenerationFailed):
            return f"generation failed: {exc}"
        log.exception(kv("task.crashed", model=self.model, taskUUID=uuid))
        return f"internal error while generating: {type(exc).__name__}: {exc}"

    def _sample(self, requests: list[GenerationRequest], uuids: list[str], progress: _Progress) -> list:
        def cancelled() -> bool:
            return self._abort.is_set() or all(self.sink.is_cancelled(u) for u in uuids)

        sampled = self.pipeline.sample_batch(requests, on_step=progress, cancelled=cancelled)
        device = getattr(self.pipeline, "device", None)
        if isinstance(device, torch.device) and device.type == "cuda":
            # Count the DiT's GPU work, not just its launch (this stream only: a decode running
            # beside it on its own stream is counted by `_decode`).
            torch.cuda.current_stream(device).synchronize()
        return sampled


@dataclass
class _Finish:
    """One task of a sampled batch on its way to the store: its latents, then (once decoded) its
    audio, and the GPU seconds it has cost so far."""

    job: Job
    sampled: Any  # `pipeline.Sampled`
    gpu_seconds: float
    result: GenerationResult | None = None


class _Progress:
    """A group's step callback. A task run again after its batch failed starts its steps over;
    its progress holds at what the failed attempt showed until the new run passes it, so a
    client never sees it go backwards."""

    def __init__(self, sink: JobSink, uuids: list[str], floor: float) -> None:
        self.sink = sink
        self.uuids = uuids
        self.reached = floor

    def __call__(self, done: int, total: int) -> None:
        fraction = done / max(total, 1)
        if fraction > self.reached:
            self.reached = fraction
            self.sink.report_progress(self.uuids, done, total)
