"""The Runware-compatible HTTP API (POST /v1) end to end, on tiny random checkpoints."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
import soundfile as sf

from cantata.api.auth import KeyRing, add_key, read_keys_file
from cantata.audio.decode import decode_audio
from examples import docs_task
from serverkit import (XL_SFT, Receiver, app_client, config, get_response, new_uuid, path_of,
                       poll_until_done, post, task, server_checkpoints, wait_for)

MAX_BODY = 2 * 2**20


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return server_checkpoints(tmp_path_factory, ("xl-sft", "xl-base"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    return {"path": path, "alice": add_key(path, "alice"), "bob": add_key(path, "bob")}


@pytest.fixture(scope="module")
def server(tmp_path_factory, root, keys):
    """The main server: API keys on, loopback webhooks allowed (the receiver runs locally), and a
    sync wait long enough for the docs examples' 225 s of audio on a busy 2-core machine (the
    timeout itself is tested on a server of its own)."""
    cfg = config(tmp_path_factory.mktemp("http"), root, no_auth=False, api_keys_file=keys["path"],
                 models=("xl-sft", "xl-base"), allow_private_urls=True, max_request_bytes=MAX_BODY,
                 sync_wait_timeout=600)
    with app_client(cfg) as client:
        client.headers["Authorization"] = f"Bearer {keys['alice']}"
        yield client


def wav_bytes(seconds: float = 6.0, rate: int = 48000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    buf = io.BytesIO()
    sf.write(buf, np.stack([tone, tone * 0.5], axis=1), rate, format="WAV")
    return buf.getvalue()


def only_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert "data" not in body or body["data"] == []
    (error,) = body["errors"]
    assert error["code"] == code, error
    assert error["message"] and error["documentation"].startswith("http")
    return error


# -- the documented examples --------------------------------------------------------------------

@pytest.mark.slow
def test_docs_examples_sync_return_playable_mp3s_of_the_right_length(server):
    garage, nocturne = docs_task("garage"), docs_task("nocturne")
    r = post(server, [garage, nocturne])
    assert r.status_code == 200, r.text
    items = r.json()["data"]
    assert [i["taskUUID"] for i in items] == [garage["taskUUID"], nocturne["taskUUID"]]
    for item, want_seconds, seed in zip(items, (75, 150), (39665, 81563)):
        assert item["taskType"] == "audioInference" and item["status"] == "success"
        assert item["seed"] == seed and "cost" not in item
        assert item["audioURL"].endswith(f"/v1/media/{item['audioUUID']}.mp3")
        audio = server.get(path_of(item["audioURL"]))
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
        info = sf.info(io.BytesIO(audio.content))
        assert (info.samplerate, info.channels) == (48000, 2)
        decoded = decode_audio(audio.content)
        assert decoded.shape[0] == 2
        assert decoded.shape[1] / 48000 == pytest.approx(want_seconds, abs=0.06)


# -- delivery modes and outputs -------------------------------------------------------------------

def test_async_ack_then_get_response_progress_is_cumulative_and_stable(server):
    t = task(deliveryMethod="async", steps=40, numberResults=2, seed=7)
    r = post(server, [t])
    assert r.status_code == 200
    assert r.json() == {"data": [{"taskType": "audioInference", "taskUUID": t["taskUUID"]}]}
    body = poll_until_done(server, t["taskUUID"])
    processing = [i for b in body["history"] for i in b.get("data", []) if i["status"] == "processing"]
    assert processing, "never saw the task processing"
    assert all(i["taskType"] == "audioInference" and i["taskUUID"] == t["taskUUID"] and "audioUUID" not in i
               for i in processing)
    progress = [i["progress"] for i in processing]
    assert progress == sorted(progress) and all(0 <= p <= 100 for p in progress)
    assert max(progress) > 0
    items = body["data"]
    assert [i["status"] for i in items] == ["success", "success"]
    assert [i["seed"] for i in items] == [7, 8]
    again = get_response(server, t["taskUUID"]).json()
    assert again["data"] == items  # cumulative and stably ordered


def test_outputs_formats_and_audio_settings(server):
    wav = task(outputFormat="WAV")
    flac = task(outputFormat="flac", outputType="base64Data")
    ogg = task(outputFormat="OGG", outputType="dataURI", audioSettings={"sampleRate": 24000, "channels": 1,
                                                                         "bitrate": 48})
    mp3 = task(outputType="base64Data", audioSettings={"sampleRate": 44100, "channels": 1, "bitrate": 128})
    r = post(server, [wav, flac, ogg, mp3])
    assert r.status_code == 200, r.text
    by_uuid = {i["taskUUID"]: i for i in r.json()["data"]}
    assert len(by_uuid) == 4

    wav_item = by_uuid[wav["taskUUID"]]
    assert "audioBase64Data" not in wav_item and wav_item["audioURL"].endswith(".wav")
    wav_file = server.get(path_of(wav_item["audioURL"]))
    assert wav_file.headers["content-type"] == "audio/wav"

    flac_item = by_uuid[flac["taskUUID"]]
    assert "audioURL" not in flac_item
    flac_bytes = base64.b64decode(flac_item["audioBase64Data"])

    ogg_item = by_uuid[ogg["taskUUID"]]
    prefix = "data:audio/ogg;base64,"
    assert ogg_item["audioDataURI"].startswith(prefix)
    ogg_bytes = base64.b64decode(ogg_item["audioDataURI"][len(prefix):])

    mp3_bytes = base64.b64decode(by_uuid[mp3["taskUUID"]]["audioBase64Data"])
    for data, fmt, rate, channels in ((wav_file.content, "WAV", 48000, 2), (flac_bytes, "FLAC", 48000, 2),
                                      (ogg_bytes, "OGG", 24000, 1), (mp3_bytes, "MP3", 44100, 1)):
        info = sf.info(io.BytesIO(data))
        assert (info.format, info.samplerate, info.channels) == (fmt, rate, channels)
        assert info.duration == pytest.approx(30, abs=0.1)


def test_number_results_three_distinct_echoed_seeds(server):
    fixed = task(numberResults=3, seed=1000, outputFormat="WAV")
    free = task(numberResults=3, outputFormat="WAV")
    r = post(server, [fixed, free])
    assert r.status_code == 200, r.text
    items = r.json()["data"]
    fixed_items = [i for i in items if i["taskUUID"] == fixed["taskUUID"]]
    free_items = [i for i in items if i["taskUUID"] == free["taskUUID"]]
    assert [i["seed"] for i in fixed_items] == [1000, 1001, 1002]
    seeds = [i["seed"] for i in free_items]
    assert len(set(seeds)) == 3 and seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2]
    assert len({i["audioUUID"] for i in items}) == 6
    assert get_response(server, fixed["taskUUID"]).json()["data"] == fixed_items


def test_include_cost_only_when_asked(server):
    with_cost, without = task(includeCost=True, numberResults=2, outputFormat="WAV"), task(outputFormat="WAV")
    items = post(server, [with_cost, without]).json()["data"]
    costs = [i["cost"] for i in items if i["taskUUID"] == with_cost["taskUUID"]]
    assert len(costs) == 2 and all(isinstance(c, float) and c > 0 and round(c, 5) == c for c in costs)
    assert all("cost" not in i for i in items if i["taskUUID"] == without["taskUUID"])


def test_dry_run_validates_and_prices_without_running(server):
    t = task(duration=75, steps=50, includeCost=True)
    bad = task(duration=5)
    r = post(server, [t, bad], headers={"X-Runware-Dry-Run": "1"})
    assert r.status_code == 200
    body = r.json()
    assert body["data"] == [{"taskType": "audioInference", "taskUUID": t["taskUUID"], "cost": 0.00675,
                             "dryRun": True}]
    assert body["errors"][0]["code"] == "invalidDurationNumber"
    only_error(get_response(server, t["taskUUID"]), 404, "taskNotFound")


# -- authentication -----------------------------------------------------------------------------------

def test_auth_bearer_leading_task_and_401s(server, keys):
    ping = {"taskType": "ping", "ping": True}
    assert post(server, [ping]).json() == {"data": [{"taskType": "ping", "pong": True}]}
    anonymous = {"Authorization": ""}
    r = post(server, [{"taskType": "authentication", "apiKey": keys["bob"]}, ping], headers=anonymous)
    assert r.status_code == 200 and r.json()["data"] == [{"taskType": "ping", "pong": True}]
    err = only_error(post(server, [ping], headers=anonymous), 401, "missingApiKey")
    assert err["parameter"] == "apiKey"
    only_error(post(server, [ping], headers={"Authorization": "Bearer cnt_wrong"}), 401, "invalidApiKey")
    only_error(post(server, [{"taskType": "authentication", "apiKey": "nope"}, ping], headers=anonymous), 401,
               "invalidApiKey")
    assert set(read_keys_file(keys["path"])) == {"alice", "bob"}
    assert keys["alice"] not in keys["path"].read_text()  # only hashes are stored


def test_tasks_are_private_to_their_key(server, keys):
    t = task(deliveryMethod="async", outputFormat="WAV")
    post(server, [t])
    bob = {"Authorization": f"Bearer {keys['bob']}"}
    only_error(get_response(server, t["taskUUID"], headers=bob), 404, "taskNotFound")
    only_error(post(server, [{"taskType": "cancel", "taskUUID": t["taskUUID"]}], headers=bob), 404, "taskNotFound")
    assert poll_until_done(server, t["taskUUID"])["data"][0]["status"] == "success"


# -- request errors: never a 500 ----------------------------------------------------------------------

def test_mixed_batch_reports_both_arrays(server):
    good, bad = task(deliveryMethod="async", outputFormat="WAV"), task(duration=10)
    r = post(server, [bad, good])
    assert r.status_code == 200
    body = r.json()
    assert body["data"] == [{"taskType": "audioInference", "taskUUID": good["taskUUID"]}]
    (error,) = body["errors"]
    assert (error["code"], error["parameter"], error["taskUUID"], error["taskType"]) == (
        "invalidDurationNumber", "duration", bad["taskUUID"], "audioInference")
    poll_until_done(server, good["taskUUID"])


def test_malformed_requests_get_runware_errors(server):
    def raw(content, content_type="application/json"):
        return server.post("/v1", content=content, headers={"Content-Type": content_type})

    only_error(raw(b"[{\"taskType\": "), 400, "invalidJSON")
    only_error(raw(b"\xff\xfe"), 400, "invalidJSON")
    only_error(raw(b"[" * 100_000), 400, "invalidJSON")
    only_error(raw(b"{\"taskType\": \"ping\"}"), 400, "invalidRequestBody")
    only_error(raw(b"[]"), 400, "invalidRequestBody")
    only_error(raw(b"[" + b" " * MAX_BODY + b"]"), 413, "maxRequestSizeExceeded")
    only_error(raw(b"taskType=ping", "application/x-www-form-urlencoded"), 415, "unsupportedContentType")
    only_error(post(server, [{"taskType": "imageInference", "taskUUID": new_uuid()}]), 400, "unsupportedTaskType")
    only_error(post(server, [{"taskUUID": new_uuid()}]), 400, "missingTaskType")
    only_error(post(server, ["ping"]), 400, "invalidTaskObject")
    only_error(get_response(server, new_uuid()), 404, "taskNotFound")
    only_error(get_response(server, "not-a-uuid"), 400, "invalidTaskUUID")
    only_error(post(server, [task(model="runware:ace-step@v1.5-turbo")]), 400, "unsupportedModel")
    only_error(server.get("/v1"), 405, "methodNotAllowed")
    only_error(server.get("/nowhere"), 404, "notFound")


def test_duplicate_task_uuid_is_a_conflict(server):
    t = task(deliveryMethod="async", outputFormat="WAV")
    assert post(server, [t]).status_code == 200
    err = only_error(post(server, [t]), 400, "conflictTaskUUID")
    assert err["taskUUID"] == t["taskUUID"]
    poll_until_done(server, t["taskUUID"])


# -- webhooks, uploads, input audio ----------------------------------------------------------------------

def test_webhook_and_upload_endpoint(server):
    with Receiver(fail_first=1) as receiver:
        t = task(numberResults=2, outputFormat="WAV", webhookURL=receiver.url + "/hook?token=s3cret",
                 uploadEndpoint=receiver.url + "/upload/song.wav")
        r = post(server, [t])  # a webhook task is acknowledged at once
        assert r.json()["data"] == [{"taskType": "audioInference", "taskUUID": t["taskUUID"]}]
        items = poll_until_done(server, t["taskUUID"])["data"]
        assert [i["uploadEndpoint"] for i in items] == [t["uploadEndpoint"]] * 2  # uploaded before "success"
        wait_for(lambda: len(receiver.json_bodies("POST")) == 2, 20, "two webhooks")
    puts = [r for r in receiver.requests if r["method"] == "PUT" and r["body"]]
    assert [p["path"] for p in puts][-2:] == ["/upload/song.wav"] * 2
    assert {p["content_type"] for p in puts} == {"audio/wav"}
    files = [server.get(path_of(i["audioURL"])).content for i in items]
    assert sorted(p["body"] for p in puts[-2:]) == sorted(files)
    hooks = receiver.json_bodies("POST")
    assert all(r["path"] == "/hook?token=s3cret" for r in receiver.requests if r["method"] == "POST")
    assert sorted(h["data"][0]["audioUUID"] for h in hooks) == sorted(i["audioUUID"] for i in items)
    assert all(len(h["data"]) == 1 and h["data"][0]["status"] == "success" for h in hooks)


def test_default_policy_refuses_loopback_webhooks(tmp_path, root):
    with app_client(config(tmp_path, root), wait_ready=False) as client:
        r = post(client, [task(webhookURL="http://127.0.0.1:9/hook")])
        err = only_error(r, 400, "urlNotAllowed")
        assert err["parameter"] == "webhookURL" and "loopback" in err["message"]
        r = post(client, [task(uploadEndpoint="http://169.254.169.254/latest")])
        assert only_error(r, 400, "urlNotAllowed")["parameter"] == "uploadEndpoint"


def test_input_audio_by_upload_base64_and_url(server):
    wav = wav_bytes(2.0)  # short: VAE-encoding the source dominates these tasks on CPU
    data_uri = "data:audio/wav;base64," + base64.b64encode(wav).decode()
    up = post(server, [{"taskType": "mediaStorage", "taskUUID": new_uuid(), "operation": "upload", "media": data_uri}])
    assert up.status_code == 200, up.text
    media_uuid = up.json()["data"][0]["mediaUUID"]
    assert server.get(path_of(up.json()["data"][0]["mediaURL"])).content == wav
    with Receiver(files={"/source.wav": wav}) as receiver:
        cover = task(inputs={"audio": media_uuid}, strength=0.5, duration=None, outputFormat="WAV")
        inline = task(inputs={"audio": base64.b64encode(wav).decode()}, duration=None, outputFormat="WAV",
                      settings={"repaintingStart": 0.5, "repaintingEnd": 1.5})
        by_url = task(inputs={"audio": receiver.url + "/source.wav"}, duration=None, outputFormat="WAV",
                      deliveryMethod="async")
        missing = task(inputs={"audio": receiver.url + "/missing.wav"}, duration=None, deliveryMethod="async")
        r = post(server, [cover, inline, by_url, missing])
        assert r.status_code == 200, r.text
        fetched = post(server, [{"taskType": "mediaStorage", "taskUUID": new_uuid(), "operation": "upload",
                                 "media": receiver.url + "/source.wav"}]).json()["data"][0]
        assert server.get(path_of(fetched["mediaURL"])).content == wav
        got = poll_until_done(server, by_url["taskUUID"])
        failed = poll_until_done(server, missing["taskUUID"])
    items = {i["taskUUID"]: i for i in r.json()["data"] + got["data"]}
    for t in (cover, inline, by_url):
        item = items[t["taskUUID"]]
        assert item["status"] == "success", item
        info = sf.info(io.BytesIO(server.get(path_of(item["audioURL"])).content))
        assert info.duration == pytest.approx(2.0, abs=0.05)  # the source sets the length
    err = failed["errors"][0]
    assert (err["code"], err["status"], err["parameter"]) == ("urlHttpError", "error", "inputs.audio")

    bad = post(server, [task(inputs={"audio": "%%% not audio %%%"}, duration=None)])
    assert only_error(bad, 400, "invalidInputsAudio")["parameter"] == "inputs.audio"
    garbage = post(server, [task(inputs={"audio": base64.b64encode(b"RIFF....nope").decode()}, duration=None)])
    assert garbage.json()["errors"][0]["code"] == "invalidAudioFormat"  # found when the task starts
    deleted = post(server, [{"taskType": "mediaStorage", "taskUUID": new_uuid(), "operation": "delete",
                             "media": media_uuid}])
    assert deleted.json()["data"][0]["mediaUUID"] == media_uuid
    only_error(post(server, [task(inputs={"audio": media_uuid}, duration=None)]), 404, "mediaNotFound")


def test_media_ttl_expiry(server):
    t = task(ttl=60, outputFormat="WAV")
    item = post(server, [t]).json()["data"][0]
    url = path_of(item["audioURL"])
    assert server.get(url).status_code == 200
    engine = server.app.state.cantata.engine
    real_clock = engine.clock
    engine.clock = lambda: real_clock() + 61
    try:
        only_error(server.get(url), 404, "mediaExpired")
        engine.sweep()
        only_error(server.get(url), 404, "mediaNotFound")
    finally:
        engine.clock = real_clock
    assert get_response(server, t["taskUUID"]).json()["data"][0]["audioUUID"] == item["audioUUID"]


def test_health_ready_and_metrics(server):
    assert server.get("/health").json() == {"status": "ok"}
    ready = server.get("/ready").json()
    assert ready["ready"] is True and ready["models"] == {"xl-sft": "ready", "xl-base": "ready"}
    post(server, [task(duration=1)])  # a validation error
    assert post(server, [task()]).json()["data"][0]["status"] == "success"
    text = server.get("/metrics").text
    assert 'cantata_queue_depth{model="xl-sft"}' in text
    assert 'cantata_tasks_finished_total{model="xl-sft",status="success"}' in text
    assert 'cantata_errors_total{code="invalidDurationNumber"}' in text
    assert "cantata_task_latency_seconds_bucket" in text and "cantata_gpu_seconds_total" in text
    docs = server.get("/docs/api").text
    assert "`conflictTaskUUID`" in docs and "`invalidDurationNumber`" in docs
    # every `documentation` link of a validation error lands on an anchor of the page
    bad = post(server, [task(settings={"bpm": 999})]).json()["errors"][0]
    assert bad["documentation"].endswith("/docs/api#request-settings-bpm")
    assert '<a id="request-settings-bpm"></a>' in docs and '<a id="errors"></a>' in docs


# -- queue limits, cancellation, sync timeout -------------------------------------------------------------

def test_queue_full_cancel_and_sync_timeout(tmp_path, root):
    cfg = config(tmp_path, root, queue_capacity=1, sync_wait_timeout=0.5)
    with app_client(cfg) as client:
        long = task(deliveryMethod="async", steps=300, outputFormat="WAV")
        post(client, [long])
        wait_for(lambda: get_response(client, long["taskUUID"]).json()["data"][0].get("progress", 0) > 0, 30,
                 "the long task to run")
        queued = task(deliveryMethod="async", outputFormat="WAV")
        assert post(client, [queued]).status_code == 200
        full = post(client, [task(deliveryMethod="async")])
        err = only_error(full, 429, "rateLimitExceeded")
        assert "queue is full" in err["message"]

        r = post(client, [{"taskType": "cancel", "taskUUID": queued["taskUUID"]}])
        assert r.json()["data"] == [{"taskType": "cancel", "taskUUID": queued["taskUUID"], "status": "cancelled"}]
        r = post(client, [{"taskType": "cancel", "taskUUID": long["taskUUID"]}])
        assert r.json()["data"][0]["status"] == "cancelled"
        for t in (queued, long):
            err = get_response(client, t["taskUUID"]).json()["errors"][0]
            assert (err["code"], err["status"], err["taskUUID"]) == ("taskCancelled", "error", t["taskUUID"])

        started = time.monotonic()
        slow = task(steps=60, outputFormat="WAV")  # the worker is free again at once: the cancel stopped it
        r = post(client, [slow])
        assert r.status_code == 200
        err = r.json()["errors"][0]
        assert (err["code"], err["taskUUID"]) == ("syncWaitTimeout", slow["taskUUID"])
        assert "getResponse" in err["message"]
        assert poll_until_done(client, slow["taskUUID"])["data"][0]["status"] == "success"
        assert time.monotonic() - started < 60
        assert client.app.state.cantata.engine.scheduler.depth() == 0


# -- configuration and key management ---------------------------------------------------------------------

def test_config_file_environment_and_flags(tmp_path):
    from cantata.config import ConfigError, load_config

    toml = tmp_path / "cantata.toml"
    toml.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[limits]\nqueue_capacity = 8\n'
                    '[cost]\ncost_per_gpu_second = {"runware:ace-step@v1.5-xl-sft" = 0.001}\n')
    env = {"CANTATA_QUEUE_CAPACITY": "16", "CANTATA_MODELS": "xl-sft,turbo", "CANTATA_NO_AUTH": "yes",
           "CANTATA_DATA_DIR": str(tmp_path / "d")}
    cfg = load_config(toml, env=env, overrides={"port": 9100, "host": None})
    assert (cfg.port, cfg.host, cfg.queue_capacity, cfg.no_auth) == (9100, "0.0.0.0", 16, True)
    assert cfg.models == ("xl-sft", "turbo") and cfg.base_url == "http://localhost:9100"
    assert cfg.cost_per_gpu_second["xl-sft"] == 0.001 and cfg.cost_per_gpu_second["turbo"] == 0.00015
    assert cfg.api_keys_file == tmp_path / "d" / "api-keys"
    policy = cfg.outbound_policy()
    assert policy.allow_private is False and policy.max_download_bytes == cfg.max_input_audio_bytes
    with pytest.raises(ConfigError, match="unknown configuration key"):
        load_config(None, env={}, overrides={"prot": 1})
    with pytest.raises(ConfigError, match="models"):
        load_config(None, env={"CANTATA_MODELS": "xl-ultra"})


def test_keys_cli_prints_a_key_once_and_stores_its_hash(tmp_path, capsys):
    from cantata.cli import main

    path = tmp_path / "keys"
    assert main(["keys", "--api-keys-file", str(path), "add", "carol"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("cnt_") and len(key) > 40 and key not in path.read_text()
    ring = KeyRing(read_keys_file(path))
    assert ring.identify(key) == "carol" and ring.identify(key + "x") is None
    assert main(["keys", "--api-keys-file", str(path), "add", "carol"]) == 2  # names are unique
    assert main(["keys", "--api-keys-file", str(path), "list"]) == 0
    assert "carol" in capsys.readouterr().out
    assert main(["keys", "--api-keys-file", str(path), "remove", "carol"]) == 0
    assert read_keys_file(path) == {}
