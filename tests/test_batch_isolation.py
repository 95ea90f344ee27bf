"""A task that fails inside a shared DiT batch fails alone: its batch-mates (other keys' tasks
included) get exactly the results of their solo runs. Issue 12, item 2."""

from __future__ import annotations

import dataclasses
import threading
from types import SimpleNamespace

import pytest
import torch

from cantata.api.validation import validate_audio_inference
from cantata.jobs.engine import Engine
from cantata.jobs.inputs import InputAudio
from cantata.jobs.mapping import generation_request
from cantata.jobs.media import LocalDiskStorage
from cantata.jobs.scheduler import Scheduler
from cantata.models.speed.batching import MAX_PADDING_WASTE
from cantata.jobs.store import ERROR, QUEUED, SUCCESS, Store
from cantata.jobs.worker import Job, ModelWorker, encode_result
from cantata.outbound import OutboundPolicy
from cantata.pipeline import CantataPipeline
from cantata.pipeline.request import GenerationCancelled, GenerationFailed, GenerationResult
from serverkit import task, wait_for

SR = 48000


@pytest.fixture(scope="module")
def xl(tiny_root) -> CantataPipeline:
    return CantataPipeline.from_pretrained(tiny_root, "xl-sft", device="cpu", dtype="fp32", download=False)


def validated(**fields):
    return validate_audio_inference(task(outputFormat="WAV", **fields))


def _engine(tmp_path, loader) -> Engine:
    store = Store(tmp_path / "db.sqlite")
    storage = LocalDiskStorage(tmp_path / "media")
    inputs = InputAudio(store, storage, OutboundPolicy(), max_bytes=2**20, max_seconds=60, retention=3600)
    batching_as_on_a_gpu = Scheduler(10, 4, max_padding_waste=MAX_PADDING_WASTE["cuda"])  # 30/32/34 s share one
    return Engine(store=store, storage=storage, scheduler=batching_as_on_a_gpu, inputs=inputs, loader=loader,
                  models=("xl-sft",), result_ttl=3600)


def _recording_batches(pipe: CantataPipeline) -> list[int]:
    """Record the size of every `sample_batch` call the worker makes."""
    sizes, sample_batch = [], pipe.sample_batch

    def recorded(requests, **kw):
        sizes.append(len(requests))
        return sample_batch(requests, **kw)

    pipe.sample_batch = recorded
    return sizes


def test_a_task_the_tokenizer_rejects_fails_alone_and_its_batch_mates_get_their_solo_audio(tmp_path, xl):
    """The real-world case: a lone surrogate in a caption (a legal JSON escape) reaches the text
    tokenizer, which raises for the whole batch. Here it bypasses API validation on purpose."""
    gate = threading.Event()
    engine = _engine(tmp_path, lambda model: gate.wait(60) and xl)  # loads only once all are queued
    sizes = _recording_batches(xl)
    engine.start()
    try:
        alice = engine.submit(validated(positivePrompt="warm lo-fi hip hop", duration=30, seed=7), key_id="alice",
                              request={})
        bad = dataclasses.replace(validated(positivePrompt="calm piano", duration=32, seed=8),
                                  positive_prompt="calm piano \ud800")
        bob = engine.submit(bad, key_id="bob", request={})
        carol = engine.submit(validated(positivePrompt="fast punk rock", settings={"lyrics": "[Chorus]\nhey ho"},
                                        duration=34, seed=9), key_id="carol", request={})
        gate.set()
        for t in (alice, bob, carol):
            wait_for(lambda t=t: engine.view(t.task_uuid).finished, 120, f"task {t.task_uuid}")
    finally:
        engine.stop(grace=30)
        del xl.sample_batch
    assert sizes == [3, 1, 1, 1]  # one batch of three, then each task alone

    failed = engine.view(bob.task_uuid)
    assert failed.status == ERROR and failed.results == []
    assert failed.error["code"] == "inferenceError"
    assert failed.error["message"].startswith("internal error while generating: TypeError")
    for t in (alice, carol):
        view = engine.view(t.task_uuid)
        assert (view.status, view.error, view.progress) == (SUCCESS, None, 100)
        solo = xl.generate(generation_request(view.task))
        assert [r.seed for r in view.results] == solo.seeds == [view.task.seed]
        stored = engine.storage.get(engine.store.get_media(view.results[0].audio_uuid).storage_key)
        assert stored == encode_result(view.task, solo.audio[0], SR).data
    engine.store.close()


# -- the worker's rules, with a stand-in pipeline --------------------------------------------------

class _Pipeline:
    """sample_batch stand-in: steps through `steps`, then fails when `fail(requests)` gives an
    error, else returns 0.1 for every sample of every seed; `decode` fails a request when
    `fail_decode(request_caption)` gives an error."""

    decode_beside_sampling = True  # results are handed to the worker's finisher as they come

    def __init__(self, fail, steps: int = 4, fail_decode=lambda caption: None):
        self.fail = fail
        self.fail_decode = fail_decode
        self.steps = steps
        self.calls = []

    def sample_batch(self, requests, on_step=None, cancelled=None):
        self.calls.append([r.caption for r in requests])
        for i in range(self.steps):
            if cancelled():
                raise GenerationCancelled(f"cancelled before step {i + 1}")
            on_step(i + 1, self.steps)
        error = self.fail(requests)
        if error is not None:
            raise error
        return [SimpleNamespace(caption=r.caption, seeds=r.seeds) for r in requests]

    def decode(self, item, cancelled=None):
        error = self.fail_decode(item.caption)
        if error is not None:
            raise error
        return GenerationResult(audio=torch.full((len(item.seeds), 2, SR), 0.1), sample_rate=SR, seeds=item.seeds,
                                latents=torch.zeros(len(item.seeds), 25, 64))


class _Sink:
    def __init__(self, tasks):
        self.jobs = [Job(uuid=t.task_uuid, task=t, inputs={}) for t in tasks]
        self.done, self.failed, self.interrupted_uuids, self.progress = {}, {}, [], {}

    def begin(self, batch):
        return self.jobs

    def report_progress(self, uuids, done, total):
        for uuid in uuids:
            self.progress.setdefault(uuid, []).append(done / total)

    def complete(self, job, seeds, audio, gpu_seconds, planned=None):
        self.done[job.uuid] = seeds

    def fail(self, uuid, code, message, parameter=None):
        self.failed[uuid] = (code, message)

    def cancelled(self, uuid):
        raise AssertionError("no task was cancelled by its client")

    def interrupted(self, uuids):
        self.interrupted_uuids += uuids

    def is_cancelled(self, uuid):
        return False


def _worker(tmp_path, pipeline, sink) -> ModelWorker:
    store = Store(tmp_path / "db.sqlite")
    inputs = InputAudio(store, LocalDiskStorage(tmp_path / "m"), OutboundPolicy(), max_bytes=1, max_seconds=1,
                        retention=60)
    worker = ModelWorker("xl-sft", loader=lambda m: pipeline, scheduler=Scheduler(4, 4, max_padding_waste=0.0),
                         sink=sink, inputs=inputs)
    worker.pipeline = pipeline
    return worker


def _tasks(*captions):
    return [dataclasses.replace(validated(positivePrompt=c), seed=i + 1) for i, c in enumerate(captions)]


def test_a_batch_whose_sampling_fails_reruns_each_alone_and_progress_never_goes_back(tmp_path):
    """A failure of the shared DiT batch costs the batch-mates a rerun, during which their
    progress holds where the failed batch left it."""
    tasks = _tasks("good one", "bad one", "good two")
    pipeline = _Pipeline(lambda rs: RuntimeError("the tokenizer refused")
                         if any(r.caption == "bad one" for r in rs) else None)
    sink = _Sink(tasks)
    _worker(tmp_path, pipeline, sink).run_batch([])
    assert pipeline.calls == [["good one", "bad one", "good two"], ["good one"], ["bad one"], ["good two"]]
    good, bad, other = (t.task_uuid for t in tasks)
    assert sink.failed == {bad: ("inferenceError", "internal error while generating: RuntimeError: the tokenizer refused")}
    assert sink.done == {good: [1], other: [3]}
    for uuid in (good, bad, other):
        assert sink.progress[uuid] == [0.25, 0.5, 0.75, 1.0]  # the reruns report nothing below 100 %


@pytest.mark.parametrize("beside", [True, False], ids=["decode-on-finisher", "decode-between-batches"])
def test_an_item_whose_decode_fails_fails_alone_without_a_rerun(tmp_path, beside):
    """Silent or NaN audio shows only once a request's latents are decoded: that task fails, its
    batch-mates' latents are theirs already, nothing is sampled again."""
    tasks = _tasks("good one", "silent one", "good two")
    pipeline = _Pipeline(lambda rs: None, fail_decode=lambda caption: GenerationFailed(
        "the model produced silent audio") if caption == "silent one" else None)
    pipeline.decode_beside_sampling = beside
    sink = _Sink(tasks)
    _worker(tmp_path, pipeline, sink).run_batch([])
    assert pipeline.calls == [["good one", "silent one", "good two"]]
    good, bad, other = (t.task_uuid for t in tasks)
    assert sink.failed == {bad: ("inferenceError", "generation failed: the model produced silent audio")}
    assert sink.done == {good: [1], other: [3]}


def test_shutdown_during_the_reruns_requeues_instead_of_failing(tmp_path):
    tasks = _tasks("first", "second")
    sink = _Sink(tasks)
    worker = None

    def fail_then_shut_down(requests):
        worker.abort()  # the server stops while the batch fails
        return RuntimeError("boom") if len(requests) > 1 else None

    pipeline = _Pipeline(fail_then_shut_down)
    worker = _worker(tmp_path, pipeline, sink)
    worker.run_batch([])
    assert sink.failed == {} and sink.done == {}
    assert sink.interrupted_uuids == [t.task_uuid for t in tasks]


def test_a_task_that_fails_alone_keeps_its_own_error(tmp_path):
    tasks = _tasks("only")
    sink = _Sink(tasks)
    _worker(tmp_path, _Pipeline(lambda rs: RuntimeError("boom")), sink).run_batch([])
    message = "internal error while generating: RuntimeError: boom"
    assert sink.failed == {tasks[0].task_uuid: ("inferenceError", message)}


# -- a shutdown stops a batch in VAE decode (issue 12, item 5) ----------------------------------------

def test_shutdown_grace_stops_a_batch_in_vae_decode_and_requeues_it(tmp_path, xl):
    """The sampler is done; the decode of the first item waits until the grace period is over.
    The cancel check before the next VAE window stops the batch, which goes back to the queue."""
    engine = _engine(tmp_path, lambda model: xl)
    worker = engine.workers["xl-sft"]
    decoding, aborted = threading.Event(), threading.Event()
    abort, decode = worker.abort, xl.vae.decode

    def abort_and_tell():
        abort()
        aborted.set()

    def slow_decode(z, *a, **kw):
        decoding.set()
        aborted.wait(60)
        return decode(z, *a, **kw)

    worker.abort = abort_and_tell
    xl.vae.decode = slow_decode
    try:
        engine.start()
        stuck = engine.submit(validated(numberResults=2), key_id="k", request={})
        decoding.wait(120)
    finally:
        engine.stop(grace=0.1)
        del xl.vae.decode
    view = engine.view(stuck.task_uuid)
    assert decoding.is_set() and aborted.is_set()
    assert (view.status, view.attempts, view.results) == (QUEUED, 0, [])
    engine.store.close()


def test_a_batchs_results_are_stored_while_the_next_batch_runs(tmp_path):
    """Encoding and storing one batch overlaps the next batch's DiT steps, one batch at a time."""
    first, second = _tasks("first"), _tasks("second")
    release = threading.Event()

    class SlowSink(_Sink):
        def begin(self, batch):
            return [job for job in self.jobs if job.uuid == batch[0]]

        def complete(self, job, seeds, audio, gpu_seconds, planned=None):
            if job.uuid == first[0].task_uuid:
                release.wait(30)  # storing the first batch takes a while ...
            super().complete(job, seeds, audio, gpu_seconds, planned)

    sink = SlowSink(first + second)
    pipeline = _Pipeline(lambda rs: None)
    worker = _worker(tmp_path, pipeline, sink)

    def loop():
        worker.run_batch([first[0].task_uuid], overlap=True)
        worker.run_batch([second[0].task_uuid], overlap=True)
        worker.wait_finished()

    thread = threading.Thread(target=loop)
    thread.start()
    wait_for(lambda: len(pipeline.calls) == 2, 10, "the second batch's steps")  # ... while these run
    assert sink.done == {}
    release.set()
    thread.join(10)
    assert list(sink.done.items()) == [(first[0].task_uuid, [1]), (second[0].task_uuid, [1])]  # in order


def test_the_vae_decodes_one_batch_on_the_finisher_while_the_next_batch_samples(tmp_path, xl):
    """`decode_beside_sampling` (the `high` tier): the first batch's VAE decode cannot start before
    the second batch is sampling, it runs on the finisher thread, and every stored file is the
    task's solo result."""
    first, second = [dataclasses.replace(validated(positivePrompt=c, duration=30), seed=s)
                     for c, s in (("first song", 1), ("second song", 2))]
    second_sampling = threading.Event()
    decode_threads = []

    class OrderedSink(_Sink):
        def __init__(self, tasks):
            super().__init__(tasks)
            self.stored = {}

        def begin(self, batch):
            return [job for job in self.jobs if job.uuid == batch[0]]

        def complete(self, job, seeds, audio, gpu_seconds, planned=None):
            self.stored[job.uuid] = audio[0].data
            super().complete(job, seeds, audio, gpu_seconds, planned)

    sample_batch, vae_decode = xl.sample_batch, xl.vae.decode

    def sampling(requests, **kw):
        if requests[0].caption == "second song":
            second_sampling.set()
        return sample_batch(requests, **kw)

    def decoding(z, *a, **kw):
        decode_threads.append(threading.current_thread().name)
        assert second_sampling.wait(60), "the first batch's decode waited for nothing"
        return vae_decode(z, *a, **kw)

    assert xl.decode_beside_sampling  # `high`, as loaded
    sink = OrderedSink([first, second])
    worker = _worker(tmp_path, xl, sink)
    xl.sample_batch, xl.vae.decode = sampling, decoding
    try:
        worker.run_batch([first.task_uuid], overlap=True)  # returns with its decode still to come
        worker.run_batch([second.task_uuid], overlap=True)
        worker.wait_finished()
    finally:
        del xl.sample_batch, xl.vae.decode
    assert list(sink.done) == [first.task_uuid, second.task_uuid] and not sink.failed
    assert decode_threads and all(name.startswith("cantata-finish-") for name in decode_threads)
    for t in (first, second):
        solo = xl.generate(generation_request(t))
        assert sink.stored[t.task_uuid] == encode_result(t, solo.audio[0], SR).data
