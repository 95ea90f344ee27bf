"""The Runware WebSocket transport (WS /v1) against a real uvicorn server."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from cantata.api.auth import add_key
from serverkit import config, new_uuid, task, server_checkpoints, uvicorn_server, wait_for

RECV_TIMEOUT = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = server_checkpoints(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("ws")
    keys = tmp / "api-keys"
    key = add_key(keys, "alice")
    cfg = config(tmp, root, no_auth=False, api_keys_file=keys)
    with uvicorn_server(cfg) as (url, app):
        yield {"url": url, "ws": url.replace("http", "ws", 1) + "/v1", "key": key, "app": app}


def recv(ws, timeout: float = RECV_TIMEOUT) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def authenticate(ws, key: str, session: str | None = None) -> str:
    message = {"taskType": "authentication", "apiKey": key}
    if session:
        message["connectionSessionUUID"] = session
    ws.send(json.dumps([message]))
    reply = recv(ws, 10)
    (item,) = reply["data"]
    assert item["taskType"] == "authentication"
    return str(uuid.UUID(item["connectionSessionUUID"]))


def http_get_response(server, task_uuid: str) -> dict:
    return httpx.post(server["url"] + "/v1", json=[{"taskType": "getResponse", "taskUUID": task_uuid}],
                      headers={"Authorization": f"Bearer {server['key']}"}, timeout=10).json()


def test_authentication_success_and_failure(server):
    with connect(server["ws"]) as ws:
        assert authenticate(ws, server["key"])
    for first in ([{"taskType": "authentication", "apiKey": "cnt_wrong"}], [{"taskType": "ping", "ping": True}]):
        with connect(server["ws"]) as ws:
            ws.send(json.dumps(first))
            reply = recv(ws, 10)
            (error,) = reply["errors"]
            assert reply["error"] == error  # the TS SDK reads only the singular form
            assert error["code"] in ("invalidApiKey", "missingApiKey") and error["taskType"] == "authentication"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1008


def test_ping_pong_and_error_frames(server):
    with connect(server["ws"]) as ws:
        authenticate(ws, server["key"])
        ws.send(json.dumps([{"taskType": "ping", "ping": True}]))
        assert recv(ws, 10) == {"data": [{"taskType": "ping", "pong": True}]}
        bad = task(duration=5)
        ws.send(json.dumps([bad]))
        (error,) = recv(ws, 10)["errors"]
        assert (error["code"], error["taskUUID"], error["taskType"]) == ("invalidDurationNumber", bad["taskUUID"],
                                                                         "audioInference")
        ws.send("{not json")
        assert recv(ws, 10)["errors"][0]["code"] == "invalidJSON"
        ws.send(json.dumps([{"taskType": "getResponse", "taskUUID": new_uuid()}]))
        assert recv(ws, 10)["errors"][0]["code"] == "taskNotFound"
        ws.send(json.dumps([{"taskType": "ping", "ping": True}]))  # still open after errors
        assert recv(ws, 10)["data"][0]["pong"] is True


def test_sync_task_sends_result_frames_only(server):
    with connect(server["ws"]) as ws:
        authenticate(ws, server["key"])
        t = task(numberResults=2, steps=12, outputFormat="WAV", seed=5)
        ws.send(json.dumps([t]))
        items = []
        while len(items) < 2:
            frame = recv(ws)
            assert "errors" not in frame, frame
            for item in frame["data"]:
                assert item["taskUUID"] == t["taskUUID"]
                assert item["status"] == "success", f"interim item pushed for a sync task: {item}"
                items.append(item)
    assert [i["seed"] for i in items] == [5, 6]
    assert all(i["audioURL"].endswith(".wav") for i in items)


def test_async_ack_then_get_response(server):
    with connect(server["ws"]) as ws:
        authenticate(ws, server["key"])
        t = task(deliveryMethod="async", steps=12, outputFormat="WAV")
        sent = time.monotonic()
        ws.send(json.dumps([t]))
        assert recv(ws, 5) == {"data": [{"taskType": "audioInference", "taskUUID": t["taskUUID"]}]}
        assert time.monotonic() - sent < 2

        def poll():
            ws.send(json.dumps([{"taskType": "getResponse", "taskUUID": t["taskUUID"]}]))
            items = recv(ws, 10)["data"]
            assert all(i["taskType"] == "audioInference" and i["taskUUID"] == t["taskUUID"] for i in items)
            return items if items[0]["status"] == "success" else None

        (item,) = wait_for(poll, 60, "async task over WS", interval=0.2)
        assert item["audioUUID"] and item["audioURL"]


def test_resume_replays_results_finished_while_disconnected(server):
    t = task(steps=8, outputFormat="WAV")
    with connect(server["ws"]) as ws:
        session = authenticate(ws, server["key"])
        ws.send(json.dumps([t]))
    wait_for(lambda: http_get_response(server, t["taskUUID"])["data"][0]["status"] == "success", 60, "task done")
    with connect(server["ws"]) as ws:
        assert authenticate(ws, server["key"], session) == session
        frame = recv(ws, 10)
    (item,) = frame["data"]
    assert (item["taskUUID"], item["status"]) == (t["taskUUID"], "success")
    with connect(server["ws"]) as ws:  # an unknown session UUID gets a fresh session, not an error
        assert authenticate(ws, server["key"], str(uuid.uuid4())) != session


def test_idle_connection_is_closed(server):
    services = server["app"].state.cantata
    original = services.config
    services.config = original.replace(ws_idle_timeout=0.5)
    try:
        with connect(server["ws"]) as ws:
            authenticate(ws, server["key"])
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
    finally:
        services.config = original
