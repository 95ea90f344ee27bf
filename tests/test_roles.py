"""The serving roles as real processes (README "Scaling out"): an API-only node and a worker on one
SQLite file; `serve --devices cpu,cpu` with its supervised worker processes; two API nodes and a
worker on a real PostgreSQL, where a task is answered, pushed and cancelled through a node other
than the one that received it. Every task is a demo task of one to four steps."""

from __future__ import annotations

import json
import os
import signal
import sqlite3

import httpx
import pytest
from websockets.sync.client import connect

from clusterkit import FAST, Cluster, audio_header_ok, children_of
from pgserver import postgres_server, postgres_url  # noqa: F401  (fixtures)
from serverkit import read_audio, server_checkpoints, task, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return server_checkpoints(tmp_path_factory)


def sqlite_row(db, task_uuid: str) -> dict:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("SELECT * FROM tasks WHERE uuid=?", (task_uuid,)).fetchone())


def pg_row(url: str, task_uuid: str) -> dict:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM tasks WHERE uuid=%s", (task_uuid,)).fetchone()


def worker_pid(row: dict) -> int:
    """The process in a task's `claimed_by` (host:pid:device)."""
    return int(row["claimed_by"].split(":")[1])


def download(url: str) -> bytes:
    resp = httpx.get(url, timeout=30)
    assert resp.status_code == 200, (url, resp.status_code, resp.text[:200])
    assert audio_header_ok(resp.content)
    return resp.content


def get_response(node, task_uuid: str) -> list[dict]:
    """A task's items, results and errors alike."""
    body = node.post([{"taskType": "getResponse", "taskUUID": task_uuid}]).json()
    return body.get("data", []) + body.get("errors", [])


def wait_done(node, task_uuid: str, timeout: float = 120) -> list[dict]:
    def done():
        items = get_response(node, task_uuid)
        return items if items and all(i.get("status") != "processing" for i in items) else None

    return wait_for(done, timeout, f"task {task_uuid} on {node.name}", interval=0.2)


def test_api_node_and_worker_share_one_sqlite_file(checkpoints, tmp_path):
    """`serve --no-worker` runs no model; `cantata worker` claims the task from the same file and
    writes its results into the same media folder, which the API node serves."""
    data = tmp_path / "data"
    with Cluster(checkpoints, data) as cluster:
        api = cluster.api()
        assert httpx.get(api.url + "/ready").json()["models"] == {"xl-sft": "remote"}
        worker = cluster.worker()
        t = task(numberResults=2, outputFormat="WAV", seed=11, **FAST)
        resp = api.post([t], timeout=120)
        assert resp.status_code == 200, resp.text
        items = resp.json()["data"]
        assert [(i["status"], i["seed"]) for i in items] == [("success", 11), ("success", 12)]
        for item in items:
            audio, rate = read_audio(download(item["audioURL"]))
            assert rate == 48000 and audio.shape[0] == 30 * 48000
        row = sqlite_row(data / "cantata.db", t["taskUUID"])
        assert (row["status"], row["attempts"], worker_pid(row)) == ("success", 1, worker.pid)
        assert api.alive() and worker.alive()


def test_serve_devices_supervises_one_worker_process_per_device(checkpoints, tmp_path):
    """Two worker processes on the CPU serve tasks; the one running a task is killed with -9: the
    supervisor starts a new process, the lapsed lease puts the task back in the queue, and it
    finishes with its attempt counted."""
    data = tmp_path / "data"
    with Cluster(checkpoints, data, env={"CANTATA_LEASE_SECONDS": "3"}) as cluster:
        server = cluster.serve("--devices", "cpu,cpu")
        first = wait_for(lambda: len(children_of(server.pid)) == 2 and children_of(server.pid), 60, "two workers")
        tasks = [task(numberResults=1, outputFormat="WAV", **FAST), task(numberResults=2, outputFormat="MP3", **FAST)]
        for t in tasks:
            assert server.post([{**t, "deliveryMethod": "async"}]).status_code == 200
        for t in tasks:
            items = wait_done(server, t["taskUUID"])
            assert {i["status"] for i in items} == {"success"}
            for item in items:
                download(item["audioURL"])

        victim_task = task(numberResults=3, outputFormat="WAV", steps=4, duration=30)
        assert server.post([{**victim_task, "deliveryMethod": "async"}]).status_code == 200
        row = wait_for(lambda: (r := sqlite_row(data / "cantata.db", victim_task["taskUUID"]))["status"] == "running"
                       and r, 60, "the task running")
        victim = worker_pid(row)
        assert victim in first, server.tail(10**9)[-4000:]  # no worker was replaced before the kill
        os.kill(victim, signal.SIGKILL)
        replaced = wait_for(lambda: len(kids := children_of(server.pid)) == 2 and victim not in kids and kids, 60,
                            "a new worker process")
        assert set(replaced) - set(first)
        items = wait_done(server, victim_task["taskUUID"])
        assert [i["status"] for i in items] == ["success"] * 3
        row = sqlite_row(data / "cantata.db", victim_task["taskUUID"])
        assert row["attempts"] == 2 and worker_pid(row) != victim
        assert "device.worker_exited" in server.tail(10**9)


def test_two_api_nodes_and_a_worker_on_postgresql(checkpoints, tmp_path, postgres_url):
    """Events cross processes: a task submitted on node A is answered by getResponse on node B, a
    WebSocket on B receives the results of a task the worker ran, a session opened on A resumes
    on B (replayed from the store), and a cancel sent to B stops the task running in the worker,
    which then serves the next task."""
    env = {"CANTATA_SYNC_WAIT_TIMEOUT": "60"}
    with Cluster(checkpoints, tmp_path / "data", store=postgres_url, env=env) as cluster:
        a, b = cluster.api(name="api-a"), cluster.api(name="api-b")
        worker = cluster.worker()
        worker.wait_loaded()

        t = task(numberResults=2, outputFormat="WAV", deliveryMethod="async", **FAST)
        assert a.post([t]).json()["data"] == [{"taskType": "audioInference", "taskUUID": t["taskUUID"]}]
        items = wait_done(b, t["taskUUID"])
        assert [i["status"] for i in items] == ["success"] * 2
        assert {download(i["audioURL"].replace(a.url, b.url)) for i in items}

        with connect(b.ws_url) as ws:
            ws.send(json.dumps([{"taskType": "authentication", "apiKey": "any"}]))
            session = json.loads(ws.recv(timeout=30))["data"][0]["connectionSessionUUID"]
            ws.send(json.dumps([{"taskType": "getResponse", "taskUUID": t["taskUUID"]}]))
            answered = json.loads(ws.recv(timeout=30))["data"]
            assert [i["audioUUID"] for i in answered] == [i["audioUUID"] for i in items]
            pushed = task(numberResults=1, outputFormat="WAV", **FAST)
            ws.send(json.dumps([pushed]))
            frame = json.loads(ws.recv(timeout=120))
            assert [(i["taskUUID"], i["status"]) for i in frame["data"]] == [(pushed["taskUUID"], "success")]
        assert session

        resumed = task(numberResults=1, outputFormat="WAV", **FAST)
        with connect(a.ws_url) as ws:
            ws.send(json.dumps([{"taskType": "authentication", "apiKey": "any"}]))
            session = json.loads(ws.recv(timeout=30))["data"][0]["connectionSessionUUID"]
            ws.send(json.dumps([resumed]))
        wait_done(a, resumed["taskUUID"])
        with connect(b.ws_url) as ws:
            ws.send(json.dumps([{"taskType": "authentication", "apiKey": "any", "connectionSessionUUID": session}]))
            assert json.loads(ws.recv(timeout=30))["data"][0]["connectionSessionUUID"] == session
            frame = json.loads(ws.recv(timeout=30))
            assert [(i["taskUUID"], i["status"]) for i in frame["data"]] == [(resumed["taskUUID"], "success")]

        # Left running, this task would take minutes here (300 steps, then decoding 3 x 300 s of audio),
        # longer than the 60 s sync wait below: the next sync task succeeds only if the cancel stopped it.
        long = task(numberResults=3, outputFormat="WAV", deliveryMethod="async", steps=300, duration=300)
        assert a.post([long]).status_code == 200
        wait_for(lambda: pg_row(postgres_url, long["taskUUID"])["status"] == "running", 60, "the long task running")
        cancel = b.post([{"taskType": "cancel", "taskUUID": long["taskUUID"]}]).json()["data"]
        assert cancel == [{"taskType": "cancel", "taskUUID": long["taskUUID"], "status": "cancelled"}]
        after = task(numberResults=1, outputFormat="WAV", **FAST)
        done = a.post([after], timeout=120).json()["data"]
        assert [i["status"] for i in done] == ["success"], done
        row = pg_row(postgres_url, long["taskUUID"])
        assert row["status"] == "cancelled" and row["error"]["code"] == "taskCancelled"
        assert pg_row(postgres_url, after["taskUUID"])["claimed_by"] == row["claimed_by"]  # the same worker moved on
        errors = get_response(a, long["taskUUID"])
        assert errors[0]["status"] == "error" and errors[0].get("code") == "taskCancelled", errors
        assert worker.alive(), worker.tail()
