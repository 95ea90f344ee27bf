"""Several engines sharing one store, in one test process (issue 7, item 3): claims, leases,
cancellation across processes and fencing, with a stand-in pipeline so each case takes seconds.
Each `Engine` here is what one process of a deployment runs: an API-only node or a worker node,
on its own connection to the same SQLite file (`claims.StoreQueue`). The real processes are
exercised by test_roles.py and test_chaos.py."""

from __future__ import annotations

import threading
import time
from uuid import uuid4

import pytest
import torch

from cantata.api.validation import validate_audio_inference
from cantata.jobs.claims import StoreQueue
from cantata.jobs.engine import Engine
from cantata.jobs.inputs import InputAudio
from cantata.jobs.media import LocalDiskStorage
from cantata.jobs.store import CANCELLED, SUCCESS, Store
from cantata.outbound import OutboundPolicy
from cantata.pipeline.request import GenerationCancelled, GenerationResult
from serverkit import task, wait_for

LEASE = 1.0  # seconds; renewed every third of it


class StandIn:
    """sample_batch stand-in: `steps` steps, each waiting for `gate` (a frozen process is a
    closed gate); every sample of its results is `level`, so whose result was kept is visible."""

    def __init__(self, level: float, steps: int = 3, step_seconds: float = 0.0) -> None:
        self.level = level
        self.steps = steps
        self.step_seconds = step_seconds
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[list[str]] = []
        self.stopped_at: list[int] = []

    decode_beside_sampling = True  # results are handed to the worker's finisher as they come

    def decode(self, item, cancelled=None):
        return item  # `sample_batch` made the audio already

    def sample_batch(self, requests, on_step=None, cancelled=None):
        self.calls.append([r.caption for r in requests])
        for i in range(self.steps):
            self.gate.wait()
            if cancelled():
                self.stopped_at.append(i)
                raise GenerationCancelled(f"cancelled before step {i + 1}")
            time.sleep(self.step_seconds)
            on_step(i + 1, self.steps)
        return [GenerationResult(audio=torch.full((len(r.seeds), 2, 4800), self.level), sample_rate=48000,
                                 seeds=r.seeds, latents=torch.zeros(len(r.seeds), 3, 64)) for r in requests]


def _node(path, media, pipeline: StandIn | None) -> Engine:
    """One process: a worker node when given a pipeline, else an API-only node."""
    store = Store(path)
    storage = LocalDiskStorage(media)
    inputs = InputAudio(store, storage, OutboundPolicy(), max_bytes=2**20, max_seconds=60, retention=3600)
    queue = StoreQueue(store, worker_id=f"node-{id(store)}", capacity=100, max_batch_size=4, max_padding_waste=0.25,
                       lease_seconds=LEASE, poll_interval=0.05)
    engine = Engine(store=store, storage=storage, scheduler=queue, inputs=inputs, loader=lambda model: pipeline,
                    models=("xl-sft",), result_ttl=3600, run_workers=pipeline is not None)
    engine.start()
    return engine


@pytest.fixture
def cluster(tmp_path):
    nodes: list[Engine] = []

    def start(pipeline: StandIn | None = None) -> Engine:
        node = _node(tmp_path / "db.sqlite", tmp_path / "media", pipeline)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop(grace=5)
        node.store.close()


def _submit(api: Engine, caption: str, key: str = "k", **fields):
    t = validate_audio_inference(task(positivePrompt=caption, outputFormat="WAV", duration=30, **fields))
    return api.submit(t, key_id=key, request={})


def _finished(engine: Engine, uuid: str, timeout: float = 30) -> None:
    wait_for(lambda: engine.view(uuid).finished, timeout, f"task {uuid}")


def test_three_workers_claim_every_task_exactly_once_with_keys_taking_turns(cluster):
    api = cluster()
    pipes = [StandIn(level=0.1 * (i + 1)) for i in range(3)]
    for pipe in pipes:
        cluster(pipe)
    submitted = [_submit(api, f"song {i}", key=f"key-{i % 3}", numberResults=1 + i % 3, seed=i) for i in range(30)]
    for t in submitted:
        _finished(api, t.task_uuid)
    runs = [caption for pipe in pipes for call in pipe.calls for caption in call]
    assert sorted(runs) == sorted(f"song {i}" for i in range(30))  # each exactly once, over the workers
    for t in submitted:
        view = api.view(t.task_uuid)
        assert (view.status, view.attempts, len(view.results)) == (SUCCESS, 1, t.number_results)


def test_a_cancel_on_the_api_node_stops_the_task_running_on_another_node(cluster):
    api = cluster()
    pipe = StandIn(level=0.1, steps=200, step_seconds=0.02)  # 4 s when left alone
    cluster(pipe)
    long = _submit(api, "long")
    wait_for(lambda: api.view(long.task_uuid).status == "running", 10, "the worker to start it")
    started = time.monotonic()
    assert api.cancel(long.task_uuid, "k").status == CANCELLED
    wait_for(lambda: pipe.stopped_at, 10, "the worker to stop")  # its lease renewal failed: it stops
    assert time.monotonic() - started < LEASE + 1.5 and pipe.stopped_at[0] < 200
    nxt = _submit(api, "next")  # and it moves on
    pipe.steps = 2
    _finished(api, nxt.task_uuid)
    assert api.view(nxt.task_uuid).status == SUCCESS and api.view(long.task_uuid).results == []


def test_a_worker_frozen_past_its_lease_cannot_overwrite_the_retry(cluster, tmp_path):
    api = cluster()
    frozen_pipe = StandIn(level=0.25)
    frozen_pipe.gate.clear()  # stops before its first step, as a SIGSTOPped process would
    frozen = cluster(frozen_pipe)
    t = _submit(api, "contested", seed=5)
    wait_for(lambda: frozen_pipe.calls, 10, "the first worker to claim it")
    frozen._stop_sweeper.set()  # a frozen process renews nothing
    frozen._leases.join(5)
    time.sleep(LEASE + 0.2)
    api.sweep_leases()  # any node's sweeper: the lease lapsed, the task goes back to the queue
    assert api.view(t.task_uuid).status == "queued" and api.view(t.task_uuid).attempts == 1
    retry_pipe = StandIn(level=0.5)
    cluster(retry_pipe)
    _finished(api, t.task_uuid)
    kept = api.view(t.task_uuid)
    assert (kept.status, kept.attempts) == (SUCCESS, 2)
    frozen_pipe.gate.set()  # SIGCONT: the old worker finishes its run and tries to store it
    wait_for(lambda: not frozen.scheduler.held(), 10, "the stale worker to give up")
    after = api.view(t.task_uuid)
    assert [r.audio_uuid for r in after.results] == [r.audio_uuid for r in kept.results]
    wav = api.result_bytes(after.results[0])
    samples = torch.frombuffer(bytearray(wav[44:]), dtype=torch.int16)
    assert abs(samples.float().mean().item() / 32767 - 0.5) < 0.01  # the retry's audio, not the stale 0.25
    files = sorted(p.name for p in (tmp_path / "media").rglob("*.wav"))
    assert files == sorted(f"{r.audio_uuid}.wav" for r in after.results)  # the stale run's file was removed


def status(client, sent: dict) -> str | None:
    """The task's status as getResponse tells it (None while the task is unknown)."""
    items = client.post("/v1", json=[{"taskType": "getResponse", "taskUUID": sent["taskUUID"]}]).json().get("data")
    return items[0]["status"] if items else None


def test_a_websocket_session_resumes_on_another_api_node_with_its_owed_result(tmp_path, tiny_root):
    """The socket's node goes away while the client waits for a sync result; the client
    authenticates on another node with its connectionSessionUUID and gets the result there."""
    from cantata.api.app import create_app
    from starlette.testclient import TestClient

    from serverkit import config

    shared = config(tmp_path, tiny_root, role="api")
    worker = Engine.from_config(shared.replace(role="worker"))
    with TestClient(create_app(shared)) as node_a, TestClient(create_app(shared)) as node_b:
        with node_a.websocket_connect("/v1") as ws:
            ws.send_json([{"taskType": "authentication", "apiKey": "any"}])
            session = ws.receive_json()["data"][0]["connectionSessionUUID"]
            sent = task(positivePrompt="resumed elsewhere", duration=30, steps=2, outputFormat="WAV", seed=3)
            ws.send_json([sent])  # sync: the client waits for the result frame ...
            wait_for(lambda: status(node_b, sent) == "processing", 30, "node A to store the task")
        worker.start()  # ... which comes after node A's socket is gone
        try:
            wait_for(lambda: status(node_b, sent) == "success", 120, "the worker to finish")
            with node_b.websocket_connect("/v1") as ws:
                ws.send_json([{"taskType": "authentication", "apiKey": "any", "connectionSessionUUID": session}])
                assert ws.receive_json()["data"][0]["connectionSessionUUID"] == session
                frame = ws.receive_json()
            with node_b.websocket_connect("/v1") as ws:  # an unknown session is adopted with nothing owed
                ws.send_json([{"taskType": "authentication", "apiKey": "any", "connectionSessionUUID": str(uuid4())}])
                ws.receive_json()
                ws.send_json([{"taskType": "ping"}])
                assert ws.receive_json() == {"data": [{"taskType": "ping", "pong": True}]}  # nothing owed
        finally:
            worker.stop(grace=5)
            worker.store.close()
    item = frame["data"][0]
    assert (item["taskUUID"], item["status"], item["seed"]) == (sent["taskUUID"], "success", 3)
