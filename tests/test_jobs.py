"""The job layer: durable store, scheduler fairness and batching, task -> GenerationRequest mapping,
and recovery from a killed server."""

from __future__ import annotations

import dataclasses
import sqlite3
import time

import httpx
import pytest
import torch

from cantata.api.validation import validate_audio_inference
from cantata.jobs.engine import MAX_ATTEMPTS, TASK_INTERRUPTED, Engine
from cantata.jobs.inputs import InputAudio
from cantata.jobs.mapping import SEED_SPACE, batch_key, generation_request, result_seeds
from cantata.jobs.media import LocalDiskStorage
from cantata.jobs.scheduler import QueuedTask, QueueFull, Scheduler
from cantata.models.speed.batching import MAX_PADDING_WASTE
from cantata.jobs.store import (CANCELLED, QUEUED, RUNNING, SUCCESS, DuplicateTask, NewDelivery,
                                NewResult, Store, StoreError)
from cantata.outbound import OutboundPolicy
from serverkit import ServerProcess, free_port, new_uuid, task, server_checkpoints, wait_for


def validated(**fields):
    return validate_audio_inference(task(**fields))


# -- store ----------------------------------------------------------------------------------------

def test_store_round_trips_and_atomic_finish(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    t = validated(numberResults=2, webhookURL="https://example.com/hook")
    seq = store.insert_task(uuid=t.task_uuid, key_id="alice", model="xl-sft", task_json=t.to_json(),
                            request_json="{}", inputs={}, now=100.0)
    with pytest.raises(DuplicateTask):
        store.insert_task(uuid=t.task_uuid, key_id="bob", model="xl-sft", task_json=t.to_json(), request_json="{}",
                          inputs={}, now=101.0)
    record = store.get_task(t.task_uuid)
    assert (record.status, record.attempts, record.seq, record.key_id) == (QUEUED, 0, seq, "alice")
    assert type(t).from_json(record.task_json) == t

    assert store.mark_running(t.task_uuid, 102.0) and not store.mark_running(t.task_uuid, 102.0)
    store.set_progress(t.task_uuid, 40)
    store.set_input(t.task_uuid, "https://example.com/a.wav", "media-1")
    record = store.get_task(t.task_uuid)
    assert (record.status, record.attempts, record.progress) == (RUNNING, 1, 40)
    assert record.inputs == {"https://example.com/a.wav": "media-1"}

    results = [NewResult(idx=i, audio_uuid=new_uuid(), seed=10 + i, storage_key=f"k{i}", ext=".mp3",
                         mime="audio/mpeg", size=123, gpu_seconds=0.5, expires_at=200.0) for i in range(2)]
    deliveries = [NewDelivery("webhook", "https://example.com/hook", r.idx) for r in results]
    assert not store.finish(t.task_uuid, SUCCESS, now=150.0, expires_at=300.0, results=results, owner="alice",
                            deliveries=deliveries, from_statuses=(QUEUED,))
    assert store.results(t.task_uuid) == []  # nothing written when the status did not match
    assert store.finish(t.task_uuid, SUCCESS, now=150.0, expires_at=300.0, results=results, owner="alice",
                        deliveries=deliveries, from_statuses=(RUNNING,))
    record = store.get_task(t.task_uuid)
    assert (record.status, record.progress, record.finished_at, record.expires_at) == (SUCCESS, 100, 150.0, 300.0)
    assert [(r.idx, r.seed) for r in store.results(t.task_uuid)] == [(0, 10), (1, 11)]
    assert store.get_media(results[1].audio_uuid).owner == "alice"
    assert [(d.kind, d.result_idx, d.status) for d in store.pending_deliveries()] == [("webhook", 0, "pending"),
                                                                                      ("webhook", 1, "pending")]
    first = store.deliveries(t.task_uuid)[0]
    store.delivery_attempted(first.id, now=151.0, error="urlTimeout: slow")
    store.delivery_settled(first.id, "failed", now=152.0)
    first = store.deliveries(t.task_uuid)[0]
    assert (first.status, first.attempts, first.last_error) == ("failed", 1, "urlTimeout: slow")

    assert [m.id for m in store.expired_media(250.0)] == [r.audio_uuid for r in results]
    assert store.delete_expired_tasks(299.0) == 0 and store.delete_expired_tasks(300.0) == 1
    assert store.get_task(t.task_uuid) is None and store.results(t.task_uuid) == [] and not store.pending_deliveries()
    store.close()

    reopened = Store(tmp_path / "db.sqlite")  # the schema is created once and read back
    assert reopened.writable()
    reopened.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="schema version 99"):
        Store(tmp_path / "db.sqlite")


def test_store_is_safe_across_threads(tmp_path):
    import threading

    store = Store(tmp_path / "db.sqlite")
    uuids = [new_uuid() for _ in range(40)]

    def insert(chunk):
        for u in chunk:
            store.insert_task(uuid=u, key_id="k", model="xl-sft", task_json="{}", request_json="{}", inputs={},
                              now=1.0)
            store.mark_running(u, 2.0)

    threads = [threading.Thread(target=insert, args=(uuids[i::4],)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(store.tasks_with_status(RUNNING)) == 40


def test_media_storage_paths_come_only_from_uuids(tmp_path):
    storage = LocalDiskStorage(tmp_path / "media")
    media_id = new_uuid()
    key = storage.put(media_id, ".mp3", b"abc")
    assert key == f"{media_id[:2]}/{media_id}.mp3" and storage.get(key) == b"abc"
    assert not list((tmp_path / "media").rglob(".tmp-*"))  # written via a temporary file + rename
    for bad_id, ext in (("../../etc/passwd", ".mp3"), (media_id, "/../../x"), (media_id, ".sh")):
        with pytest.raises(ValueError):
            storage.put(bad_id, ext, b"x")
    with pytest.raises(ValueError):
        storage.get("../" + key)
    storage.delete(key)
    assert not storage.local_path(key).exists()


# -- scheduler ------------------------------------------------------------------------------------

def queued(key: str, seq: int, batch=None, duration=30.0, items=1, model="xl-sft") -> QueuedTask:
    return QueuedTask(task_uuid=f"{key}{seq}", key_id=key, model=model, batch_key=batch, duration=duration,
                      items=items, seq=seq)


def test_scheduler_round_robin_between_keys_oldest_first_within_a_key():
    s = Scheduler(capacity=100, max_batch_size=4, max_padding_waste=0.0)
    for seq, key in enumerate("AAAAABCC"):
        s.add(queued(key, seq))  # no batch key: one task per batch
    order = [s.next_batch("xl-sft", timeout=0)[0].task_uuid for _ in range(8)]
    assert order == ["A0", "B5", "C6", "A1", "C7", "A2", "A3", "A4"]
    assert s.next_batch("xl-sft", timeout=0) == []


def test_scheduler_batches_compatible_tasks_fairly():
    s = Scheduler(capacity=100, max_batch_size=4, max_padding_waste=0.25)
    s.add(queued("A", 0, batch="k"))
    s.add(queued("A", 1, batch="k"))
    s.add(queued("A", 2, batch="other"))
    s.add(queued("B", 3, batch="k", duration=33))
    s.add(queued("B", 4, batch="k", duration=200))  # too long to share a batch with 30 s
    s.add(queued("C", 5, batch="k", items=3))  # too many results for the room left
    s.add(queued("C", 6, batch=None))  # audio-to-audio: always alone
    s.add(queued("A", 7, batch="k", model="turbo"))
    first = [t.task_uuid for t in s.next_batch("xl-sft", timeout=0)]
    assert first == ["A0", "B3", "A1"]  # one per key per round: A, B, then A again
    assert [t.task_uuid for t in s.next_batch("xl-sft", timeout=0)] == ["B4"]
    assert [t.task_uuid for t in s.next_batch("xl-sft", timeout=0)] == ["C5"]
    assert [t.task_uuid for t in s.next_batch("xl-sft", timeout=0)] == ["A2"]
    assert [t.task_uuid for t in s.next_batch("xl-sft", timeout=0)] == ["C6"]
    assert [t.task_uuid for t in s.next_batch("turbo", timeout=0)] == ["A7"]


def test_scheduler_pads_a_batch_only_as_far_as_the_device_gains_from_it():
    def batches(limit):
        s = Scheduler(capacity=100, max_batch_size=4, max_padding_waste=limit)
        for seq, duration in enumerate((30.0, 30.0, 36.0, 60.0)):
            s.add(queued("A", seq, batch="k", duration=duration))
        return [[t.task_uuid for t in s.next_batch("xl-sft", timeout=0)] for _ in range(3)]

    assert batches(MAX_PADDING_WASTE["cpu"]) == [["A0", "A1"], ["A2"], ["A3"]]  # CPU: equal lengths only
    assert batches(MAX_PADDING_WASTE["cuda"]) == [["A0", "A1", "A2"], ["A3"], []]  # 36 s pads 30 s by 6 %


def test_scheduler_capacity_readiness_and_close():
    s = Scheduler(capacity=2, max_batch_size=4, max_padding_waste=0.0)
    s.add(queued("A", 0))
    s.add(QueuedTask("A1", "A", "xl-sft", None, 30.0, 1, 1, ready=False))
    with pytest.raises(QueueFull):
        s.add(queued("B", 2))
    s.add(queued("B", 3), force=True)  # recovery ignores the cap
    assert s.depth() == 3 and s.depth("turbo") == 0
    assert [t.task_uuid for t in s.next_batch("xl-sft", timeout=0)] == ["A0"]
    assert [t.task_uuid for t in s.next_batch("xl-sft", timeout=0)] == ["B3"]  # A1 still downloading
    assert s.next_batch("xl-sft", timeout=0.05) == []
    s.mark_ready("A1")
    assert [t.task_uuid for t in s.next_batch("xl-sft", timeout=0)] == ["A1"]
    assert s.remove("nope") is False
    s.close()
    started = time.monotonic()
    assert s.next_batch("xl-sft", timeout=5) == [] and time.monotonic() - started < 1


# -- task -> GenerationRequest ----------------------------------------------------------------------

def test_mapping_text_to_music_with_every_setting():
    t = validated(positivePrompt="uk garage, choir", negativePrompt="muddy", duration=75.5, seed=39665, steps=50,
                  CFGScale=15, numberResults=3,
                  settings={"lyrics": "[Verse]\nUnder the rails", "bpm": 132, "keyScale": "D minor",
                            "timeSignature": "4", "vocalLanguage": "es", "guidanceType": "cfg",
                            "cfgIntervalStart": 0.1, "cfgIntervalEnd": 0.9, "dcw": True})
    r = generation_request(t)
    assert (r.caption, r.negative_prompt, r.lyrics, r.language) == ("uk garage, choir", "muddy",
                                                                    "[Verse]\nUnder the rails", "es")
    assert (r.duration, r.bpm, r.keyscale, r.timesignature) == (75.5, 132, "D minor", 4)
    assert (r.seeds, r.batch_size, r.steps) == ([39665, 39666, 39667], 3, 50)
    assert (r.guidance_type, r.guidance_scale, r.cfg_interval, r.dcw) == ("cfg", 15.0, (0.1, 0.9), True)
    assert (r.task, r.source, r.reference_audio, r.cover_noise_strength) == ("text2music", None, [], 0.0)
    assert batch_key(t) == ("xl-sft", 50, 3.0, "cfg", 15.0, (0.1, 0.9), True)  # model, sampler settings


def test_mapping_defaults_turbo_and_seeds():
    t = validated(model="runware:ace-step@v1.5-turbo", seed=SEED_SPACE - 1, numberResults=2, steps=None)
    r = generation_request(t)
    assert (r.lyrics, r.language, r.guidance_type, r.guidance_scale, r.steps) == ("", "en", None, None, 8)
    assert r.seeds == [SEED_SPACE - 1, 0]  # wraps inside the 63-bit space
    assert result_seeds(7, 3) == [7, 8, 9]
    with pytest.raises(ValueError):
        generation_request(validated())  # the seed must be fixed (at acceptance) first


def test_mapping_cover_and_repaint_sources():
    source = torch.zeros(2, 48000 * 6)
    cover = validated(inputs={"audio": new_uuid()}, duration=None, strength=0.7,
                      settings={"coverConditioningScale": 0.5}, seed=1)
    r = generation_request(cover, source=source, references=[source])
    assert (r.task, r.duration, r.cover_strength, r.cover_noise_strength) == ("cover", None, 0.5, 0.7)
    assert r.source.waveform is source and r.reference_audio == [source]
    assert batch_key(cover) is None
    repaint = validated(inputs={"audio": new_uuid()}, duration=None, strength=0.4, seed=1,
                        settings={"repaintingStart": 2, "repaintingEnd": 4, "repaintMode": "aggressive"})
    r = generation_request(repaint, source=source)
    assert (r.task, r.repaint_start, r.repaint_end, r.repaint_mode) == ("repaint", 2.0, 4.0, "aggressive")
    assert r.cover_noise_strength == 0.0  # strength shapes covers only


# -- recovery -----------------------------------------------------------------------------------------

def _engine(tmp_path, store) -> Engine:
    from cantata.jobs.scheduler import Scheduler as S

    storage = LocalDiskStorage(tmp_path / "media")
    inputs = InputAudio(store, storage, OutboundPolicy(), max_bytes=2**20, max_seconds=60, retention=3600)
    return Engine(store=store, storage=storage, scheduler=S(10, 4, max_padding_waste=0.0), inputs=inputs,
                  loader=lambda m: None, models=("xl-sft",), result_ttl=3600)


def test_recovery_retries_once_then_fails_with_task_interrupted(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    once, twice, waiting = validated(seed=1), validated(seed=2), validated(seed=3)
    for t in (once, twice, waiting):
        store.insert_task(uuid=t.task_uuid, key_id="k", model="xl-sft", task_json=t.to_json(), request_json="{}",
                          inputs={}, now=1.0)
    store.mark_running(once.task_uuid, 2.0)  # died during its first run
    store.mark_running(twice.task_uuid, 2.0)  # died during its first run ...
    store.requeue(twice.task_uuid, uncount_attempt=False)
    store.mark_running(twice.task_uuid, 3.0)  # ... and during its retry
    assert store.get_task(twice.task_uuid).attempts == MAX_ATTEMPTS
    engine = _engine(tmp_path, store)
    engine.recover()
    assert store.get_task(once.task_uuid).status == QUEUED
    failed = store.get_task(twice.task_uuid)
    assert failed.status == "error" and failed.error["code"] == TASK_INTERRUPTED
    assert "stopped twice" in failed.error["message"]
    assert {t.task_uuid for t in engine.scheduler.next_batch("xl-sft", timeout=0)} | \
        {t.task_uuid for t in engine.scheduler.next_batch("xl-sft", timeout=0)} == {once.task_uuid, waiting.task_uuid}
    # A batch stopped by shutdown goes back to the queue without using up an attempt.
    store.mark_running(waiting.task_uuid, 4.0)
    engine.interrupted([waiting.task_uuid])
    assert (store.get_task(waiting.task_uuid).status, store.get_task(waiting.task_uuid).attempts) == (QUEUED, 0)
    engine.cancel(waiting.task_uuid, "k")
    assert store.get_task(waiting.task_uuid).status == CANCELLED


@pytest.mark.slow
def test_kill_during_work_then_restart_finishes_everything(tmp_path_factory):
    root = server_checkpoints(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("restart")
    port = free_port()
    server = ServerProcess(root, tmp / "data", port).start()
    try:
        early = task(outputFormat="WAV")
        early_item = server.post([early]).json()["data"][0]
        assert early_item["status"] == "success"

        long = task(deliveryMethod="async", steps=60, outputFormat="WAV", seed=11)
        others = [task(deliveryMethod="async", outputFormat="WAV") for _ in range(2)]
        assert server.post([long, *others]).status_code == 200

        def running():
            item = server.post([{"taskType": "getResponse", "taskUUID": long["taskUUID"]}]).json()["data"][0]
            return item.get("progress", 0) > 0

        wait_for(running, 60, "the long task to run", interval=0.05)
        server.kill()  # SIGKILL mid-task: no shutdown hook runs

        server.start()
        for t in (long, *others):
            def done(t=t):
                body = server.post([{"taskType": "getResponse", "taskUUID": t["taskUUID"]}]).json()
                return body if body.get("data") and body["data"][0]["status"] == "success" else None
            wait_for(done, 120, f"task {t['taskUUID']} after restart", interval=0.2)
        details = server.post([{"taskType": "getTaskDetails", "taskUUID": long["taskUUID"]}]).json()["data"][0]
        assert (details["status"], details["attempts"]) == ("success", 2)  # retried once
        assert details["response"]["data"][0]["seed"] == 11  # same seed on the retry
        again = server.post([{"taskType": "getResponse", "taskUUID": early["taskUUID"]}]).json()["data"]
        assert again == [early_item]
        assert httpx.get(early_item["audioURL"]).status_code == 200

        # Interrupted twice: the second restart gives up on it with taskInterrupted.
        doomed = task(deliveryMethod="async", steps=300, outputFormat="WAV")
        server.post([doomed])
        for _ in range(2):
            wait_for(lambda: server.post([{"taskType": "getResponse", "taskUUID": doomed["taskUUID"]}])
                     .json()["data"][0].get("progress", 0) > 0, 60, "the doomed task to run", interval=0.05)
            server.kill()
            server.start()
        error = server.post([{"taskType": "getResponse", "taskUUID": doomed["taskUUID"]}]).json()["errors"][0]
        assert (error["code"], error["status"], error["taskUUID"]) == (TASK_INTERRUPTED, "error", doomed["taskUUID"])
    finally:
        server.stop()


@pytest.mark.slow
def test_graceful_shutdown_requeues_an_unfinished_batch_without_counting_it(tmp_path_factory):
    from serverkit import config

    root = server_checkpoints(tmp_path_factory)
    cfg = config(tmp_path_factory.mktemp("shutdown"), root)
    engine = Engine.from_config(cfg)
    engine.start()
    try:
        wait_for(lambda: engine.readiness()["ready"], 60, "engine ready")
        quick = engine.submit(validated(outputFormat="WAV"), key_id="k", request={})
        wait_for(lambda: engine.view(quick.task_uuid).status == SUCCESS, 60, "quick task")
        slow = engine.submit(validated(steps=300, outputFormat="WAV"), key_id="k", request={})
        wait_for(lambda: engine.view(slow.task_uuid).progress > 0, 60, "slow task running")
    finally:
        started = time.monotonic()
        engine.stop(grace=0.2)  # far too short for 300 steps: the batch is stopped and requeued
    assert time.monotonic() - started < 20
    view = engine.view(slow.task_uuid)
    assert (view.status, view.attempts) == (QUEUED, 0)
    assert engine.view(quick.task_uuid).status == SUCCESS
    from cantata.jobs.engine import ShuttingDown
    with pytest.raises(ShuttingDown):
        engine.submit(validated(), key_id="k", request={})
    engine.store.close()


class _FakePipeline:
    """sample_batch stand-in: fails as told, else returns one quiet second per seed."""

    def __init__(self, fail_when=lambda requests: None):
        self.calls = []
        self.fail_when = fail_when

    decode_beside_sampling = True  # results are handed to the worker's finisher as they come

    def decode(self, item, cancelled=None):
        return item  # `sample_batch` made the audio already

    def sample_batch(self, requests, on_step=None, cancelled=None):
        from cantata.pipeline.request import GenerationResult

        self.calls.append(len(requests))
        error = self.fail_when(requests)
        if error is not None:
            raise error
        on_step(1, 1)
        return [GenerationResult(audio=torch.full((len(r.seeds), 2, 48000), 0.1), sample_rate=48000,
                                 seeds=r.seeds, latents=torch.zeros(len(r.seeds), 25, 64)) for r in requests]


class _Sink:
    def __init__(self, tasks):
        from cantata.jobs.worker import Job

        self.jobs = [Job(uuid=t.task_uuid, task=t, inputs={}) for t in tasks]
        self.done, self.failed = {}, {}

    def begin(self, batch):
        return self.jobs

    def report_progress(self, uuids, done, total):
        pass

    def complete(self, job, seeds, audio, gpu_seconds, planned=None):
        self.done[job.uuid] = (seeds, [a.ext for a in audio])

    def fail(self, uuid, code, message, parameter=None):
        self.failed[uuid] = (code, message)

    def is_cancelled(self, uuid):
        return False


def _run_fake(tmp_path, pipeline, tasks):
    from cantata.jobs.worker import ModelWorker

    tasks = [dataclasses.replace(t, seed=1) for t in tasks]  # the engine fixes seeds at acceptance
    sink = _Sink(tasks)
    store = Store(tmp_path / "db.sqlite")
    inputs = InputAudio(store, LocalDiskStorage(tmp_path / "m"), OutboundPolicy(), max_bytes=1, max_seconds=1,
                        retention=60)
    worker = ModelWorker("xl-sft", loader=lambda m: pipeline, scheduler=Scheduler(4, 4, max_padding_waste=0.0),
                         sink=sink, inputs=inputs)
    worker.pipeline = pipeline
    worker.run_batch([])
    return sink


def test_worker_splits_a_batch_that_runs_out_of_memory(tmp_path):
    tasks = [validated(outputFormat="WAV", numberResults=2), validated(outputFormat="FLAC")]
    oom = _FakePipeline(lambda requests: torch.OutOfMemoryError("CUDA out of memory") if len(requests) > 1 else None)
    sink = _run_fake(tmp_path, oom, tasks)
    assert oom.calls == [2, 1, 1] and not sink.failed
    assert sink.done[tasks[0].task_uuid] == ([1, 2], [".wav", ".wav"])
    assert sink.done[tasks[1].task_uuid] == ([1], [".flac"])


def test_worker_turns_any_pipeline_exception_into_a_task_error(tmp_path):
    tasks = [validated(outputFormat="WAV")]
    sink = _run_fake(tmp_path, _FakePipeline(lambda requests: RuntimeError("boom")), tasks)
    assert sink.failed[tasks[0].task_uuid] == ("inferenceError", "internal error while generating: RuntimeError: boom")
    sink = _run_fake(tmp_path, _FakePipeline(lambda requests: torch.OutOfMemoryError("oom")), tasks)
    assert sink.failed[tasks[0].task_uuid][1].startswith("out of GPU memory")
