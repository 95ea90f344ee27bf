"""The queue extension of processing items (`queuePosition`, `eta`) through the in-process app:
tasks queued behind a running one carry their place in line over HTTP and over the WebSocket, the
running one carries none, an estimate appears once the model has a finished task to go on, and
finished tasks carry neither.

The worker's pipeline waits on a semaphore before each batch, so the test decides what runs and
what stays queued; nothing depends on timing."""

from __future__ import annotations

import json
import threading

import pytest
from starlette.testclient import TestClient

from cantata.api.app import create_app
from cantata.jobs.engine import Engine, pipeline_loader
from serverkit import config, get_response, poll_until_done, post, server_checkpoints, task, wait_for

EXTENSION = ("queuePosition", "eta")


class TurnstilePipeline:
    """A real pipeline whose every batch waits for one `release()` of `turns`."""

    def __init__(self, pipeline, turns: threading.Semaphore) -> None:
        self.pipeline = pipeline
        self.turns = turns

    def sample_batch(self, *args, **kwargs):
        assert self.turns.acquire(timeout=120), "the test never let this batch run"
        return self.pipeline.sample_batch(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.pipeline, name)


@pytest.fixture
def gated(tmp_path_factory):
    root = server_checkpoints(tmp_path_factory, ("xl-sft",))
    cfg = config(tmp_path_factory.mktemp("queue"), root, models=("xl-sft",))
    turns = threading.Semaphore(0)
    load = pipeline_loader(cfg)
    engine = Engine.from_config(cfg, loader=lambda model: TurnstilePipeline(load(model), turns))
    try:
        with TestClient(create_app(cfg, engine=engine), base_url="http://localhost:8080") as client:
            wait_for(lambda: client.get("/ready").json()["ready"], 60, "server ready")
            yield client, engine, turns
    finally:
        turns.release(100)  # never leave a worker waiting


def submit(client) -> str:
    t = task(deliveryMethod="async", steps=1)
    assert post(client, [t]).status_code == 200
    return t["taskUUID"]


def processing_item(client, task_uuid: str) -> dict:
    response = get_response(client, task_uuid)
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    assert (item["taskUUID"], item["status"]) == (task_uuid, "processing")
    return item


def status(engine, task_uuid: str) -> str:
    return engine.view(task_uuid).status


def test_queued_tasks_carry_their_position_and_an_eta_once_one_finished(gated):
    client, engine, turns = gated
    running = submit(client)
    wait_for(lambda: status(engine, running) == "running", 30, "the first task to be claimed")
    queued = [submit(client) for _ in range(3)]

    first = processing_item(client, running)
    assert not any(name in first for name in EXTENSION)  # running, no progress yet: nothing to go on
    behind = [processing_item(client, u) for u in queued]
    assert [item["queuePosition"] for item in behind] == [0, 1, 2]
    assert not any("eta" in item for item in behind)  # no task of this model has finished yet

    with client.websocket_connect("/v1") as ws:  # the same item over the WebSocket
        ws.send_text(json.dumps([{"taskType": "getResponse", "taskUUID": queued[2]}]))
        assert ws.receive_json()["data"][0]["taskType"] == "authentication"  # --no-auth: a session opens
        (item,) = ws.receive_json()["data"]
        assert (item["taskUUID"], item["queuePosition"]) == (queued[2], 2)

    turns.release()  # the first task runs to the end; the next batch is claimed and waits
    wait_for(lambda: status(engine, running) == "success", 60, "the first task to finish")
    wait_for(lambda: status(engine, queued[0]) == "running", 30, "the next batch to be claimed")
    still_queued = [u for u in queued if status(engine, u) == "queued"]
    last = submit(client)
    item = processing_item(client, last)
    assert item["queuePosition"] == len(still_queued)
    assert isinstance(item["eta"], float) and item["eta"] > 0  # from the finished task's run time

    turns.release(10)
    for task_uuid in (running, *queued, last):
        body = poll_until_done(client, task_uuid, timeout=120)
        (done,) = body["data"]
        assert done["status"] == "success" and not any(name in done for name in EXTENSION)
