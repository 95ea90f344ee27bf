"""Audio to audio end to end over HTTP, against a real `cantata serve` subprocess: upload an MP3
with `mediaStorage`, then cover and repaint it by its mediaUUID, with WAV outputs.

* A cover and a repaint give exactly the source's decoded length; outpainting (a negative
  `repaintingStart`, a `repaintingEnd` past the source) extends it by the same amounts.
* Outside the repaint window (past the waveform crossfade: 0.05 s in conservative mode, 0.025 s
  in the default balanced one) the output is the decoded source itself, because the server
  splices the original waveform back (to WAV's 16-bit precision); inside the window it is new.
* Bad input audio gets its documented code with `parameter: "inputs.audio"` and never a 500:
  empty, corrupt, not audio (a PNG), longer than the server's limit (set to 3.5 s here), and
  `duration` sent along with `inputs.audio`.

Sources are 3 s long: VAE-encoding input audio costs about 1.2 s per second of audio on CPU.
"""

from __future__ import annotations

import base64
import zlib

import httpx
import numpy as np
import pytest

from cantata.audio.codecs import encode
from cantata.audio.decode import decode_audio
from serverkit import XL_SFT, fetch_audio, keyed_server, new_uuid, server_checkpoints, wait_for

pytestmark = pytest.mark.slow  # real servers and subprocesses: minutes on 2 cores

RATE = 48000
SOURCE_SECONDS = 3.0
MAX_INPUT_SECONDS = 3.5
CROSSFADE = {"conservative": 0.05, "balanced": 0.025}
TOLERANCE = 1e-3  # WAV is 16-bit (one step is 3e-5); the splice itself is exact


def music_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Stereo float32 [2, n]: a chord progression with harmonics and note envelopes, plus a
    hi-hat-like noise tick on every beat, panned differently per channel."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    beat = 60 / 120
    left, right = np.zeros(n), np.zeros(n)
    for i, root in enumerate((220.0, 174.6, 261.6, 196.0) * int(np.ceil(seconds / 2 / beat))):
        start = int(i * 2 * beat * RATE)
        if start >= n:
            break
        seg = slice(start, min(n, start + int(2 * beat * RATE)))
        tt = t[seg] - t[start]
        env = np.exp(-1.5 * tt) * (1 - np.exp(-60 * tt))
        for ratio, pan in ((1.0, 0.3), (1.26, 0.7), (1.5, 0.5)):
            tone = sum(np.sin(2 * np.pi * root * ratio * k * tt) / k for k in (1, 2, 3)) * env * 0.12
            left[seg] += tone * (1 - pan)
            right[seg] += tone * pan
    for b in range(int(seconds / beat) + 1):
        start = int(b * beat * RATE)
        m = min(n - start, int(0.04 * RATE))
        if m > 0:
            tick = rng.standard_normal(m) * np.exp(-np.arange(m) / (0.008 * RATE)) * 0.15
            left[start:start + m] += tick
            right[start:start + m] += 0.8 * tick
    return np.stack([left, right]).astype(np.float32)


def png_bytes() -> bytes:
    """A valid 1x1 PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    ihdr = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + \
        chunk(b"IEND", b"")


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"CANTATA_MAX_INPUT_AUDIO_SECONDS": str(MAX_INPUT_SECONDS)}
    with keyed_server(tmp_path_factory.mktemp("a2a"), server_checkpoints(tmp_path_factory), key_name="a2a",
                      env=env) as (srv, key):
        client = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=300)
        with client:
            yield client


@pytest.fixture(scope="module")
def source(server) -> dict:
    """The MP3 uploaded with mediaStorage, and its decoded waveform as the server decodes it."""
    mp3 = encode(music_like(SOURCE_SECONDS), RATE, "MP3")
    reply = post(server, [{"taskType": "mediaStorage", "taskUUID": new_uuid(), "operation": "upload",
                           "media": data_uri(mp3, "audio/mpeg")}])
    assert reply.status_code == 200, reply.text
    (item,) = reply.json()["data"]
    assert item["taskType"] == "mediaStorage" and item["operation"] == "upload"
    assert server.get(httpx.URL(item["mediaURL"]).path).content == mp3
    decoded = decode_audio(mp3)
    assert decoded.shape[1] == pytest.approx(SOURCE_SECONDS * RATE, abs=2)
    return {"uuid": item["mediaUUID"], "mp3": mp3, "decoded": decoded}


def post(client: httpx.Client, tasks: list[dict]) -> httpx.Response:
    response = client.post("/v1", json=tasks)
    assert response.status_code != 500, response.text
    return response


def a2a(media: str, **fields) -> dict:
    return {"taskType": "audioInference", "taskUUID": new_uuid(), "model": XL_SFT,
            "positivePrompt": "warm jazz trio, brushed drums, upright bass", "steps": 2, "seed": 7,
            "outputFormat": "WAV", "inputs": {"audio": media}, **fields}


def output_of(item: dict) -> np.ndarray:
    """A result's WAV, as float32 [2, samples]."""
    assert item["status"] == "success" and item["audioURL"].endswith(".wav"), item
    audio, rate, data = fetch_audio(item["audioURL"])
    assert rate == RATE and audio.shape[1] == 2 and data[:4] == b"RIFF"
    return audio.T


def seconds(x: float) -> int:
    return int(round(x * RATE))


def test_cover_and_repaints_keep_the_source_outside_the_window(server, source):
    src = source["decoded"]
    n = src.shape[1]
    start, end = 1.0, 2.0
    tasks = {
        "cover": a2a(source["uuid"], strength=0.8),
        "conservative": a2a(source["uuid"], settings={"repaintingStart": start, "repaintingEnd": end,
                                                      "repaintMode": "conservative"}),
        "balanced": a2a(source["uuid"], settings={"repaintingStart": start, "repaintingEnd": end}),  # default mode
        "outpaint": a2a(source["uuid"], settings={"repaintingStart": -1.0, "repaintingEnd": SOURCE_SECONDS + 0.5}),
        "prepend": a2a(source["uuid"], settings={"repaintingStart": -0.5, "repaintingEnd": 1.0}),
    }
    reply = post(server, list(tasks.values()))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert "errors" not in body, body["errors"]
    items = {i["taskUUID"]: i for i in body["data"]}
    out = {name: output_of(items[t["taskUUID"]]) for name, t in tasks.items()}

    # lengths: the source's decoded length, plus any outpainting on either side
    assert out["cover"].shape[1] == n
    assert out["conservative"].shape[1] == n and out["balanced"].shape[1] == n
    assert out["outpaint"].shape[1] == seconds(1.0) + n + seconds(0.5)
    assert out["prepend"].shape[1] == seconds(0.5) + n

    def close(a: np.ndarray, b: np.ndarray) -> float:
        assert a.shape == b.shape and a.shape[1] > 0
        return float(np.abs(a - b).max())

    def differs(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))

    for mode in ("conservative", "balanced"):
        audio, cf = out[mode], CROSSFADE[mode]
        before, after = slice(0, seconds(start - cf) - 1), slice(seconds(end + cf) + 1, n)
        assert close(audio[:, before], src[:, before]) < TOLERANCE, mode
        assert close(audio[:, after], src[:, after]) < TOLERANCE, mode
        inside = slice(seconds(start + cf) + 1, seconds(end - cf) - 1)
        assert differs(audio[:, inside], src[:, inside]) > 0.1, mode  # regenerated, not the source
    # the crossfades differ by mode: at start - 0.04 s conservative is already blending, balanced is not
    probe = slice(seconds(start - 0.04), seconds(start - 0.03))
    assert close(out["balanced"][:, probe], src[:, probe]) < TOLERANCE
    assert close(out["conservative"][:, probe], src[:, probe]) > TOLERANCE

    # prepend: output time t is source time t - 0.5; the source comes back after the window
    shift = seconds(0.5)
    kept = slice(seconds(1.0 + 0.025) + 1, n)
    assert close(out["prepend"][:, shift + kept.start:], src[:, kept]) < TOLERANCE
    window = slice(shift, shift + seconds(1.0) - seconds(0.025) - 1)
    assert differs(out["prepend"][:, window], src[:, :window.stop - shift]) > 0.1
    assert differs(out["cover"], src) > 0.1


def only_error(reply: httpx.Response, status: int, code: str, parameter) -> dict:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body.get("data", []) == []
    (error,) = body["errors"]
    assert (error["code"], error["parameter"]) == (code, parameter), error
    assert error["message"] and error["documentation"].startswith("http")
    return error


def upload(server: httpx.Client, data: bytes, mime: str) -> str:
    reply = post(server, [{"taskType": "mediaStorage", "taskUUID": new_uuid(), "operation": "upload",
                           "media": data_uri(data, mime)}])
    assert reply.status_code == 200, reply.text
    return reply.json()["data"][0]["mediaUUID"]


def test_bad_input_audio_codes_through_http(server, source):
    # refused when the task is accepted: 400
    empty = post(server, [a2a("data:audio/mpeg;base64,")])
    only_error(empty, 400, "invalidAudioEmpty", "inputs.audio")
    conflict = post(server, [a2a(source["uuid"], duration=30)])
    assert only_error(conflict, 400, "conflictingParameters", ["duration", "inputs.audio"])
    empty_upload = post(server, [{"taskType": "mediaStorage", "taskUUID": new_uuid(), "operation": "upload",
                                  "media": "data:audio/mpeg;base64,"}])
    only_error(empty_upload, 400, "invalidAudioEmpty", "media")

    # found when the task starts (uploads are stored as they are; decoding happens at run time):
    # the task's own outcome, so HTTP 200 with the error (status "error") for sync requests
    corrupt = upload(server, source["mp3"][:417] + bytes(range(256)) * 8, "audio/mpeg")
    too_long_mp3 = encode(music_like(MAX_INPUT_SECONDS + 0.5, seed=1), RATE, "MP3")
    cases = {
        "corrupt": (a2a(corrupt), "invalidAudioFormat"),
        "png": (a2a(data_uri(png_bytes(), "image/png")), "invalidAudioFormat"),
        "random": (a2a(base64.b64encode(np.random.default_rng(3).bytes(4096)).decode()), "invalidAudioFormat"),
        "too-long": (a2a(upload(server, too_long_mp3, "audio/mpeg")), "invalidAudioTooLong"),
    }
    for name, (task, code) in cases.items():
        reply = post(server, [task])
        error = only_error(reply, 200, code, "inputs.audio")
        assert (error["status"], error["taskUUID"], error["taskType"]) == ("error", task["taskUUID"],
                                                                          "audioInference"), name

    # the same outcome through async delivery and getResponse
    task = a2a(upload(server, png_bytes(), "image/png"), deliveryMethod="async")
    ack = post(server, [task])
    assert ack.status_code == 200 and ack.json()["data"] == [{"taskType": "audioInference",
                                                              "taskUUID": task["taskUUID"]}]

    def settled():
        reply = post(server, [{"taskType": "getResponse", "taskUUID": task["taskUUID"]}])
        return reply if "errors" in reply.json() else None

    error = only_error(wait_for(settled, 120, "the async task's error", interval=0.2), 200, "invalidAudioFormat",
                       "inputs.audio")
    assert error["status"] == "error"
