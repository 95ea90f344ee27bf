"""Defects found by hostile testing (issue 12), each reproduced: responses that could not be
encoded, key changes that needed a restart, silent WebSocket clients cut off while waiting,
credential endpoints, URLs that could only fail at delivery, and oversized headers."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import anyio
import httpx
import pytest
from starlette.testclient import TestClient
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from cantata.api import wire
from cantata.api.app import create_app
from cantata.api.headers import MAX_HEADER_BYTES
from cantata.jobs.engine import Engine, pipeline_loader
from cantata.outbound import OutboundError, OutboundPolicy, check_destination, check_url
from serverkit import (app_client, cantata_cli, config, keyed_server, new_uuid, poll_until_done, post,
                       server_checkpoints, task, uvicorn_server, wait_for)

REPLACEMENT = "\ufffd"
NEVER_ALLOWED = ("http://127.1/hook", "http://2130706433/hook", "http://0x7f000001/hook", "http://localhost/hook",
                 "http://[::1]/hook", "http://127.0.0.1:9/hook")
CREDENTIAL_ENDPOINTS = ("169.254.170.2", "169.254.170.23", "[fd00:ec2::23]")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return server_checkpoints(tmp_path_factory)


@pytest.fixture(scope="module")
def client(tmp_path_factory, root):
    """In-process app, no auth, the default outbound policy (loopback and private refused)."""
    with app_client(config(tmp_path_factory.mktemp("hardening"), root)) as c:
        yield c


def raw_post(client, text: str, **headers):
    """POST a body written by hand: JSON escapes such as "\\ud800" go out exactly as typed."""
    return client.post("/v1", content=text.encode("ascii"), headers={"Content-Type": "application/json", **headers})


def strict_json(response) -> dict:
    """The body as a strict parser sees it: valid UTF-8, no NaN/Infinity, no lone surrogate left."""
    text = response.content.decode("utf-8")
    body = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in json.dumps(body, ensure_ascii=False))
    return body


# -- 1. responses that cannot fail to encode -----------------------------------------------------


def test_lone_surrogates_echoed_in_task_type_uuid_and_key_names_render_as_json(client):
    response = raw_post(client, '[{"taskType": "\\ud800", "taskUUID": "\\udfff"}]')
    body = strict_json(response)
    assert response.status_code == 400
    (error,) = body["errors"]
    assert (error["code"], error["taskType"], error["taskUUID"]) == ("unsupportedTaskType", REPLACEMENT, REPLACEMENT)

    t = task()
    with_bad_key = json.dumps(t)[:-1] + ', "\\ud83dkey": 1}'  # an unknown key whose name is a lone surrogate
    response = raw_post(client, f"[{with_bad_key}]", **{"X-Runware-Dry-Run": "1"})
    body = strict_json(response)
    assert response.status_code == 400
    (error,) = body["errors"]
    assert (error["code"], error["taskUUID"]) == ("unsupportedParameter", t["taskUUID"])
    assert error["parameter"].endswith("key")  # named, however the validator spells the bad code point


def test_wire_json_writes_anything_as_strict_utf8_json():
    nested = []
    for _ in range(5_000):  # deeper than the encoder recurses
        nested = [nested]
    value = {"\ud800key": ["a\udfffb", float("nan"), float("inf"), 10**5000, {1, 2}], (1, 2): None, "deep": nested}
    text = wire.encode(value).decode("utf-8")
    body = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert body[f"{REPLACEMENT}key"][:3] == [f"a{REPLACEMENT}b", None, None]
    assert isinstance(body[f"{REPLACEMENT}key"][3], str) and body["(1, 2)"] is None
    assert wire.dumps({"taskType": "ping", "pong": True}) == '{"taskType":"ping","pong":true}'  # the plain path


def test_tasks_accepted_before_a_surrogate_task_are_reported_not_a_500(client):
    accepted = task(deliveryMethod="async")
    response = raw_post(client, f'[{json.dumps(accepted)}, {{"taskType": "\\ud800", "taskUUID": "{new_uuid()}"}}]')
    body = strict_json(response)
    assert response.status_code == 200
    assert body["data"] == [{"taskType": "audioInference", "taskUUID": accepted["taskUUID"]}]
    assert [e["code"] for e in body["errors"]] == ["unsupportedTaskType"]
    final = poll_until_done(client, accepted["taskUUID"])
    assert final["data"][0]["status"] == "success"


def test_get_task_details_of_a_stored_request_holding_a_surrogate(client):
    """A task stored with a lone surrogate in its request (by a server before validation refused
    them): getTaskDetails answers it, with U+FFFD in place of the surrogate, instead of 500 forever."""
    t = task(deliveryMethod="async")
    assert post(client, [t]).status_code == 200
    poll_until_done(client, t["taskUUID"])
    db = client.app.state.cantata.config.db_path
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE tasks SET request_json = ? WHERE uuid = ?",
                     (json.dumps({**t, "positivePrompt": "lo-fi \ud800 drums"}), t["taskUUID"]))
    response = post(client, [{"taskType": "getTaskDetails", "taskUUID": t["taskUUID"]}])
    body = strict_json(response)
    assert response.status_code == 200
    (details,) = body["data"]
    assert details["request"][0]["positivePrompt"] == f"lo-fi {REPLACEMENT} drums"
    assert details["status"] == "success"


def test_websocket_frames_echoing_surrogates_are_valid_json(client):
    with client.websocket_connect("/v1") as ws:
        ws.send_text('[{"taskType": "\\udc00", "taskUUID": "\\ud800"}]')
        assert ws.receive_json()["data"][0]["taskType"] == "authentication"  # --no-auth: a session opens first
        text = ws.receive_text()
    text.encode("utf-8")  # a frame is UTF-8 on the wire: nothing in it may be unencodable
    (error,) = json.loads(text)["errors"]
    assert (error["code"], error["taskType"], error["taskUUID"]) == ("unsupportedTaskType", REPLACEMENT, REPLACEMENT)


def test_a_sync_result_that_cannot_be_rendered_is_reported_for_its_task(client, monkeypatch):
    """The task was queued before its result failed to render: the reply says so (200, an error
    naming the task) rather than a 500 that a client would retry into conflictTaskUUID."""
    renderer = client.app.state.cantata.renderer

    def broken(view):
        raise FileNotFoundError("result file gone")

    monkeypatch.setattr(renderer, "items", broken)
    t = task()
    response = post(client, [t])
    body = strict_json(response)
    assert response.status_code == 200
    (error,) = body["errors"]
    assert (error["code"], error["taskUUID"]) == ("internalServerError", t["taskUUID"])
    monkeypatch.undo()
    assert poll_until_done(client, t["taskUUID"])["data"][0]["status"] == "success"


# -- 2. API keys follow the keys file ------------------------------------------------------------


def ping(server, key: str) -> int:
    return httpx.post(server.url + "/v1", json=[{"taskType": "ping", "ping": True}],
                      headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code


@pytest.mark.slow
def test_keys_added_and_removed_with_the_cli_take_effect_on_a_running_server(tmp_path, root):
    data = tmp_path / "data"
    with keyed_server(tmp_path, root) as (server, tester_key):
        assert ping(server, tester_key) == 200
        with connect(server.ws_url) as ws:
            ws.send(json.dumps([{"taskType": "authentication", "apiKey": tester_key}]))
            assert json.loads(ws.recv(timeout=10))["data"][0]["taskType"] == "authentication"

            added = cantata_cli("keys", "add", "bob", "--data-dir", str(data), timeout=60)  # flags after the command
            assert added.returncode == 0, added.stderr
            bob_key = added.stdout.strip()
            wait_for(lambda: ping(server, bob_key) == 200, 10, "the added key to work")

            removed = cantata_cli("keys", "remove", "tester", "--data-dir", str(data), timeout=60)
            assert removed.returncode == 0, removed.stderr
            wait_for(lambda: ping(server, tester_key) == 401, 10, "the removed key to be refused")
            assert ping(server, bob_key) == 200

            # The socket that authenticated with the removed key is refused at its next task.
            ws.send(json.dumps([{"taskType": "ping", "ping": True}]))
            reply = json.loads(ws.recv(timeout=10))
            assert reply["error"]["code"] == "invalidApiKey"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1008
        listed = cantata_cli("keys", "list", "--data-dir", str(data), timeout=60)
        assert listed.returncode == 0 and listed.stdout.split() == ["bob"]


# -- 3. a WebSocket waiting for its own sync results is not idle ---------------------------------


class GatedPipeline:
    """A real pipeline whose batches wait for `gate`: the test decides when results can exist."""

    def __init__(self, pipeline, gate: threading.Event) -> None:
        self.pipeline = pipeline
        self.gate = gate

    def sample_batch(self, *args, **kwargs):
        assert self.gate.wait(120), "the test never opened the gate"
        return self.pipeline.sample_batch(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.pipeline, name)


def test_silent_websocket_waiting_for_a_sync_result_outlives_the_idle_timeout(tmp_path, root):
    cfg = config(tmp_path, root, ws_idle_timeout=0.3)
    gate = threading.Event()
    load = pipeline_loader(cfg)
    engine = Engine.from_config(cfg, loader=lambda model: GatedPipeline(load(model), gate))
    try:
        with TestClient(create_app(cfg, engine=engine), base_url="http://localhost:8080") as client:
            wait_for(lambda: client.get("/ready").json()["ready"], 60, "server ready")
            with client.websocket_connect("/v1") as ws:
                t = task()
                ws.send_text(json.dumps([t]))
                assert ws.receive_json()["data"][0]["taskType"] == "authentication"  # --no-auth: a session opens
                time.sleep(cfg.ws_idle_timeout * 5)  # silence both ways, far past the idle timeout
                gate.set()
                (item,) = ws.receive_json()["data"]
                assert (item["taskUUID"], item["status"]) == (t["taskUUID"], "success")
    finally:
        gate.set()


# -- 4. outbound URLs ----------------------------------------------------------------------------


def test_container_credential_endpoints_stay_refused_with_private_urls_allowed():
    private_ok = OutboundPolicy(allow_private=True)
    check_url("http://10.0.0.5/hook", private_ok)  # what allow_private is for
    for host in CREDENTIAL_ENDPOINTS:
        url = f"http://{host}/v2/credentials"
        with pytest.raises(OutboundError) as refused:
            check_url(url, private_ok)
        assert refused.value.code == "urlNotAllowed"
        check_url(url, OutboundPolicy(allowed_hosts=(host.strip("[]"),)))  # only an explicit entry opens one


def test_urls_resolving_to_refused_addresses_are_refused_at_submission(client):
    for url in NEVER_ALLOWED:
        for parameter in ("webhookURL", "uploadEndpoint"):
            for dry_run in ({"X-Runware-Dry-Run": "1"}, {}):
                t = task(**{parameter: url})
                response = post(client, [t], headers=dry_run)
                assert response.status_code == 400, (url, response.text)
                (error,) = response.json()["errors"]
                assert (error["code"], error["parameter"], error["taskUUID"]) == ("urlNotAllowed", parameter,
                                                                                  t["taskUUID"]), url
                assert client.app.state.cantata.engine.store.get_task(t["taskUUID"]) is None  # nothing queued

    async def allowed_when_private_urls_are():
        for url in NEVER_ALLOWED:
            await check_destination(url, OutboundPolicy(allow_private=True))

    anyio.run(allowed_when_private_urls_are)


# -- 5. oversized request headers ----------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory, root):
    """The app under a real uvicorn (h11), no auth."""
    with uvicorn_server(config(tmp_path_factory.mktemp("live"), root)) as (url, app):
        yield url


def test_oversized_headers_get_a_runware_error_body_from_uvicorn(live):
    ping_task = [{"taskType": "ping", "ping": True}]
    with httpx.Client(base_url=live, timeout=10) as http:
        assert http.post("/v1", json=ping_task, headers={"X-Filler": "a" * (MAX_HEADER_BYTES // 2)}).status_code == 200
        # Just over our limit, and over h11's default 16 KiB buffer (which `cantata serve` raises).
        for size in (MAX_HEADER_BYTES + 1, 40 * 1024):
            response = http.post("/v1", json=ping_task, headers={"X-Filler": "a" * size})
            assert response.status_code == 431
            (error,) = strict_json(response)["errors"]
            assert error["code"] == "requestHeadersTooLarge" and error["documentation"].startswith("http")
    # The WebSocket handshake's parser (websockets) takes header lines up to 8 KiB each: spread the filler.
    fillers = {f"X-Filler-{i}": "a" * 3000 for i in range(MAX_HEADER_BYTES // 3000 + 1)}
    with pytest.raises(InvalidStatus) as denied:
        connect(live.replace("http", "ws", 1) + "/v1", additional_headers=fillers, open_timeout=10)
    assert denied.value.response.status_code == 431
    assert json.loads(denied.value.response.body)["errors"][0]["code"] == "requestHeadersTooLarge"


def test_keep_alive_connection_survives_a_response_echoing_a_surrogate(live):
    with httpx.Client(base_url=live, timeout=10) as http:
        first = http.post("/v1", content=b'[{"taskType": "\\ud800"}]', headers={"Content-Type": "application/json"})
        assert first.status_code == 400 and strict_json(first)["errors"][0]["taskType"] == REPLACEMENT
        second = http.post("/v1", json=[{"taskType": "ping", "ping": True}])
        assert second.json() == {"data": [{"taskType": "ping", "pong": True}]}
        assert first.extensions["network_stream"] is second.extensions["network_stream"]  # one connection
