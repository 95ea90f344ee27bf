"""Conformance with Runware's real client libraries, unchanged, against a real `cantata serve`.

The server is a `cantata serve` subprocess on tiny random XL SFT + XL Base checkpoints, with API
keys on (a key made by `cantata keys add`). Each SDK runs in its own process with its own
interpreter, driven by a small script in `tests/sdk_clients/` that prints JSON outcomes:

* `runware-sdk` 1.8.0 (PyPI; GitHub Runware/runware-python): `client.run({...})` over the
  WebSocket (its default) and REST, async delivery (its default) and sync, pointed at the server
  only through its `ws_base_url` / `http_base_url` settings;
* `runware` 0.5.24 (PyPI; the older Runware/sdk-python): `Runware(api_key, url=ws://…/v1)`,
  `audioInference(IAudioInference(...))`, sync (its default) and async + `getResponse`;
* `@runware/sdk-js` 1.3.2 (npm; the older JS SDK, which has `audioInference`) under Node.

Both Python SDKs install into the import name `runware`, so each gets a virtualenv of its own,
cached under `.cache/sdk-venvs/` (the npm package under `.cache/sdk-js/`) and reused while it
still imports at the pinned version. When a package cannot be installed (no network) a scenario
is skipped with the reason locally, and fails under CI (`CI=true`), where it must run.

The docs' two example requests (api.md §2.5) are sent with every parameter as documented: XL SFT
"Mossy Subway Choir Garage" (75 s, 50 steps, CFG 15) and XL Base "Mosaic Orchard Brass Nocturne"
(150 s, 50 steps, CFG 11.5). On two idle CPU cores the pair costs about 40 s of server time
(SFT ~13 s, Base ~28 s, half of it decoding and MP3-encoding 150 s of audio), so each SDK sends
them once: the new SDK the SFT one over the WebSocket and the Base one over REST, the old SDK
both sync, the JS SDK the SFT one; the transport x delivery matrix uses small 30 s / 2-step tasks.

Not covered: the old Python SDK with a refused key. After the server's auth error and close, its
reconnect task and the next call's `ensureConnection` race (two concurrent `connect()`s, one
waiting on a replaced asyncio.Event), and the call hangs in about one run of four.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from examples import docs_example
from unavailable import unavailable

pytestmark = pytest.mark.slow  # real servers and subprocesses: minutes on 2 cores
from serverkit import REPO, XL_SFT, _lock, fetch_audio, keyed_server, server_checkpoints

CACHE = REPO / ".cache"
CLIENTS = Path(__file__).parent / "sdk_clients"
NEW_SDK = ("runware-sdk", "1.8.0")
OLD_SDK = ("runware", "0.5.24")
JS_SDK = ("@runware/sdk-js", "1.3.2")
TURBO = "runware:ace-step@v1.5-turbo"

GARAGE = docs_example("garage")  # tests/fixtures/runware_examples.json
NOCTURNE = docs_example("nocturne")
SMALL = {"model": XL_SFT, "positivePrompt": "lo-fi hip hop, dusty drums, warm keys", "duration": 30, "steps": 2}

# A refused key must surface at once: the auth reply is immediate, nowhere near the 15 s
# authentication timeout of the new SDK (a run also pays for the SDK's model-registry lookup,
# up to 3 s when the registry host is slow to fail).
PROMPT_CONNECT_S = 5.0
PROMPT_RUN_S = 10.0
# One client run: the docs examples take about 40 s of server time on two idle CPU cores.
CLIENT_TIMEOUT_S = 420


# -- installing the SDKs (cached) -----------------------------------------------------------------


def _imports(python: Path, dist: str, version: str) -> bool:
    check = f"import importlib.metadata as m, runware; assert m.version({dist!r}) == {version!r}"
    return python.exists() and subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0


def _sdk_python(dist: str, version: str) -> Path:
    """The interpreter of a virtualenv holding exactly `dist==version` (made once, then reused)."""
    root = CACHE / "sdk-venvs" / f"{dist}-{version}"
    python = root / "bin" / "python"
    root.parent.mkdir(parents=True, exist_ok=True)
    with _lock(root.parent / f"{dist}.lock"):
        if _imports(python, dist, version):
            return python
        shutil.rmtree(root, ignore_errors=True)
        made = subprocess.run([sys.executable, "-m", "venv", str(root)], capture_output=True, text=True, timeout=300)
        if made.returncode != 0:
            unavailable(f"cannot create a virtualenv for {dist}=={version}: {made.stderr.strip()[-300:]}")
        try:
            done = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                                   "--no-input", "-q", f"{dist}=={version}"],
                                  capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            shutil.rmtree(root, ignore_errors=True)
            unavailable(f"pip install {dist}=={version} timed out (no network?)")
        if done.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            unavailable(f"cannot install {dist}=={version} (no network?): {tail}")
        assert _imports(python, dist, version), f"{dist}=={version} installed but does not import"
        return python


@pytest.fixture(scope="session")
def new_sdk() -> Path:
    return _sdk_python(*NEW_SDK)


@pytest.fixture(scope="session")
def old_sdk() -> Path:
    return _sdk_python(*OLD_SDK)


@pytest.fixture(scope="session")
def js_sdk() -> tuple[str, Path]:
    """(node, the package's ESM entry point), installed with npm into .cache/sdk-js once."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node/npm not installed")
    name, version = JS_SDK
    root = CACHE / "sdk-js"
    package = root / "node_modules" / name
    entry = package / "dist" / "index.js"

    def installed() -> bool:
        try:
            return json.loads((package / "package.json").read_text())["version"] == version and entry.is_file()
        except (OSError, ValueError, KeyError):
            return False

    root.mkdir(parents=True, exist_ok=True)
    with _lock(CACHE / "sdk-js.lock"):
        if not installed():
            if not (root / "package.json").exists():
                (root / "package.json").write_text('{"name": "cantata-sdk-js-cache", "private": true}\n')
            try:
                done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--save-exact",
                                       f"{name}@{version}"], cwd=root, capture_output=True, text=True, timeout=600)
            except subprocess.TimeoutExpired:
                unavailable(f"npm install {name}@{version} timed out (no network?)")
            if done.returncode != 0 or not installed():
                tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
                unavailable(f"cannot install {name}@{version} (no network?): {tail}")
    return node, entry


# -- the server ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = server_checkpoints(tmp_path_factory, ("xl-sft", "xl-base"))
    with keyed_server(tmp_path_factory.mktemp("sdk"), root, "--model", "xl-sft", "--model", "xl-base",
                      key_name="sdk") as (srv, key):
        yield {"ws": srv.ws_url, "http": srv.url + "/v1", "key": key}


def drive(command: list[str], spec: dict, timeout: float = CLIENT_TIMEOUT_S) -> dict:
    """Run an SDK client script with `spec` on stdin; its JSON outcomes by call name."""
    try:
        done = subprocess.run(command, input=json.dumps(spec), capture_output=True, text=True, timeout=timeout,
                              cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise AssertionError(f"client still running after {timeout} s (hung?):\n{stderr[-4000:]}") from None
    assert done.returncode == 0, f"client exited with {done.returncode}:\n{done.stderr[-4000:]}"
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"client printed no JSON:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}") from None


def run_new(python: Path, server: dict, calls: list[dict]) -> dict:
    spec = {"ws_url": server["ws"], "http_url": server["http"], "calls": calls}
    return drive([str(python), str(CLIENTS / "runware_sdk_run.py")], spec)


def run_old(python: Path, server: dict, calls: list[dict], api_key: str | None = None) -> dict:
    spec = {"ws_url": server["ws"], "http_url": server["http"], "api_key": api_key or server["key"], "calls": calls}
    return drive([str(python), str(CLIENTS / "runware_old_run.py")], spec)


def run_js(js: tuple[str, Path], server: dict, calls: list[dict], api_key: str | None = None) -> dict:
    node, entry = js
    spec = {"ws_url": server["ws"], "api_key": api_key or server["key"], "calls": calls}
    return drive([node, str(CLIENTS / "sdk_js_run.mjs"), str(entry)], spec)


def succeeded(outcome: dict, count: int = 1) -> list[dict]:
    assert outcome["ok"], outcome.get("error")
    results = outcome["results"]
    assert len(results) == count, results
    return results


def check_result(item: dict, seconds: float, *, seed: int | None = None, cost: bool = False) -> None:
    """A success item whose audioURL downloads and decodes (soundfile) to `seconds` of 48 kHz stereo."""
    assert item["taskType"] == "audioInference" and item["status"] == "success", item
    assert item["audioURL"].endswith(f"/v1/media/{item['audioUUID']}.mp3")
    if seed is not None:
        assert item["seed"] == seed
    assert isinstance(item["seed"], int)
    if cost:
        assert isinstance(item["cost"], float) and item["cost"] > 0
    else:
        assert item.get("cost") is None
    audio, rate, _ = fetch_audio(item["audioURL"])
    assert rate == 48000 and audio.shape[1] == 2
    assert audio.shape[0] / rate == pytest.approx(seconds, abs=0.06)


# -- runware-sdk (client.run) ---------------------------------------------------------------------


def test_new_sdk_docs_examples_websocket_and_rest(new_sdk, server):
    """The two documented requests through client.run, as an app would send them (no taskType,
    no deliveryMethod: the SDK resolves the task type from the AIR and defaults to async)."""
    out = run_new(new_sdk, server, [
        {"name": "garage", "api_key": server["key"], "transport": "websocket", "params": GARAGE},
        {"name": "nocturne", "api_key": server["key"], "transport": "rest", "params": NOCTURNE},
    ])
    for name, example in (("garage", GARAGE), ("nocturne", NOCTURNE)):
        (item,) = succeeded(out[name])
        check_result(item, example["duration"], seed=example["seed"])
        # async: the SDK polled getResponse and reported the processing items' progress
        assert out[name]["progress"] and all(0 <= p <= 100 for p in out[name]["progress"]), out[name]


def test_new_sdk_sync_and_async_over_both_transports(new_sdk, server):
    key = server["key"]
    out = run_new(new_sdk, server, [
        {"name": "ws-async", "api_key": key, "transport": "websocket",
         "params": {**SMALL, "numberResults": 2, "includeCost": True}},
        {"name": "ws-sync", "api_key": key, "transport": "websocket",
         "params": {**SMALL, "deliveryMethod": "sync", "seed": 1234}},
        {"name": "rest-async", "api_key": key, "transport": "rest",
         "params": {**SMALL, "seed": 99, "includeCost": True}},
        {"name": "rest-sync", "api_key": key, "transport": "rest",
         "params": {**SMALL, "deliveryMethod": "sync", "numberResults": 2}},
    ])
    first, second = succeeded(out["ws-async"], 2)
    assert first["taskUUID"] == second["taskUUID"] and first["seed"] != second["seed"]
    for item in (first, second):
        check_result(item, 30, cost=True)
    check_result(*succeeded(out["ws-sync"]), 30, seed=1234)
    check_result(*succeeded(out["rest-async"]), 30, seed=99, cost=True)
    items = succeeded(out["rest-sync"], 2)
    assert len({i["seed"] for i in items}) == 2 and len({i["audioUUID"] for i in items}) == 2
    for item in items:
        check_result(item, 30)
    assert out["ws-sync"]["progress"] == [] and out["rest-sync"]["progress"] == []  # sync: no interim items


def test_new_sdk_validation_errors_carry_code_and_parameter(new_sdk, server):
    key = server["key"]
    turbo_cfg = {**SMALL, "model": TURBO, "CFGScale": 5}
    bad_bpm = {**SMALL, "settings": {"bpm": 999}}
    out = run_new(new_sdk, server, [
        {"name": "ws-bpm", "api_key": key, "transport": "websocket", "params": bad_bpm},
        {"name": "ws-turbo", "api_key": key, "transport": "websocket", "params": turbo_cfg},
        {"name": "rest-bpm", "api_key": key, "transport": "rest", "params": bad_bpm},
        {"name": "rest-turbo", "api_key": key, "transport": "rest", "params": turbo_cfg},
    ])
    for name, parameter in (("ws-bpm", "settings.bpm"), ("ws-turbo", "CFGScale"),
                            ("rest-bpm", "settings.bpm"), ("rest-turbo", "CFGScale")):
        assert not out[name]["ok"], out[name]
        error = out[name]["error"]
        assert (error["type"], error["module"]) == ("RunwareError", "runware.errors")
        assert error["code"] == "validation" and error["retryable"] is False, error
        assert error["parameter"] == parameter and error["task_uuid"], error
        assert error["status_code"] == (400 if name.startswith("rest") else None), error
        assert out[name]["seconds"] < PROMPT_RUN_S
    assert "between 30 and 300" in out["ws-bpm"]["error"]["message"]


def test_new_sdk_bad_api_key_is_a_prompt_auth_error(new_sdk, server):
    out = run_new(new_sdk, server, [
        {"name": "ws-connect", "api_key": "cnt_not-a-key", "transport": "websocket", "connect_only": True},
        {"name": "ws-run", "api_key": "cnt_not-a-key", "transport": "websocket", "params": SMALL},
        {"name": "rest-run", "api_key": "cnt_not-a-key", "transport": "rest", "params": SMALL},
    ])
    for name in ("ws-connect", "ws-run", "rest-run"):
        assert not out[name]["ok"], out[name]
        error = out[name]["error"]
        assert error["type"] == "RunwareError" and error["code"] == "auth", error
        assert "Invalid API key" in error["message"]
    assert out["ws-connect"]["seconds"] < PROMPT_CONNECT_S, out["ws-connect"]
    assert out["ws-run"]["seconds"] < PROMPT_RUN_S and out["rest-run"]["seconds"] < PROMPT_RUN_S
    assert out["rest-run"]["error"]["status_code"] == 401
    assert out["rest-run"]["error"]["parameter"] == "apiKey"


# -- runware (the older Python SDK) -----------------------------------------------------------------


def test_old_sdk_docs_examples_sync(old_sdk, server):
    out = run_old(old_sdk, server, [{"name": "garage", "request": GARAGE}, {"name": "nocturne", "request": NOCTURNE}])
    for name, example in (("garage", GARAGE), ("nocturne", NOCTURNE)):
        assert out[name]["ack"] is None  # sync (the SDK's default): the results themselves
        (item,) = succeeded(out[name])
        assert item["_class"] == "IAudio"
        check_result(item, example["duration"], seed=example["seed"])


def test_old_sdk_async_get_response_number_results_and_errors(old_sdk, server):
    out = run_old(old_sdk, server, [
        {"name": "sync-two", "request": {**SMALL, "numberResults": 2, "includeCost": True,
                                         "settings": {"bpm": 132, "timeSignature": "4"}}},  # ISettings: Union[int, str]
        {"name": "async", "request": {**SMALL, "deliveryMethod": "async", "seed": 4242}},
        {"name": "async-two", "request": {**SMALL, "deliveryMethod": "async", "numberResults": 2}},
        {"name": "bad-bpm", "request": {**SMALL, "settings": {"bpm": 999}}},
        {"name": "turbo-cfg", "request": {**SMALL, "model": TURBO, "CFGScale": 5}},
    ])
    for name in ("sync-two", "async-two"):
        items = succeeded(out[name], 2)
        assert len({i["seed"] for i in items}) == 2 and len({i["audioUUID"] for i in items}) == 2
        for item in items:
            check_result(item, 30, cost=name == "sync-two")
    assert out["sync-two"]["ack"] is None
    (item,) = succeeded(out["async"])
    assert out["async"]["ack"] == {"taskType": "audioInference", "taskUUID": item["taskUUID"]}
    assert item["_class"] == "IAudio"  # picked from the item's (original) taskType
    check_result(item, 30, seed=4242)
    for name, code, parameter in (("bad-bpm", "invalidBpm", "settings.bpm"),
                                  ("turbo-cfg", "unsupportedCFGScaleForModel", "CFGScale")):
        assert not out[name]["ok"], out[name]
        error = out[name]["error"]
        assert (error["type"], error["code"]) == ("RunwareAPIError", code), error
        assert error["data"]["parameter"] == parameter and error["data"]["taskType"] == "audioInference"


# -- @runware/sdk-js ----------------------------------------------------------------------------


def test_sdk_js_docs_example_over_websocket(js_sdk, server):
    out = run_js(js_sdk, server, [
        {"name": "garage", "request": GARAGE},
        {"name": "async-two", "request": {**SMALL, "deliveryMethod": "async", "numberResults": 2}},
        {"name": "bad-bpm", "request": {**SMALL, "settings": {"bpm": 999}}},
    ])
    assert out["connect"]["ok"], out["connect"]
    (item,) = succeeded(out["garage"])
    check_result(item, GARAGE["duration"], seed=GARAGE["seed"])
    items = succeeded(out["async-two"], 2)
    assert len({i["seed"] for i in items}) == 2
    for item in items:
        check_result(item, 30)
    error = out["bad-bpm"]["error"]["error"]  # the SDK rejects with the server's error object
    assert (error["code"], error["parameter"], error["taskType"]) == ("invalidBpm", "settings.bpm", "audioInference")


def test_sdk_js_bad_api_key(js_sdk, server):
    out = run_js(js_sdk, server, [{"name": "run", "request": SMALL}], api_key="cnt_not-a-key")
    connect = out["connect"]
    assert not connect["ok"] and "run" not in out
    assert (connect["error"]["error"]["code"], connect["error"]["error"]["parameter"]) == ("invalidApiKey", "apiKey")
    assert connect["seconds"] < PROMPT_CONNECT_S
