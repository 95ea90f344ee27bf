"""Shared helpers for the server tests: a tiny checkpoint written once per session, app and
subprocess servers, a local HTTP receiver for webhooks and uploads, task builders and polling."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from starlette.testclient import TestClient

from cantata.config import ServerConfig

XL_SFT = "runware:ace-step@v1.5-xl-sft"
XL_BASE = "runware:ace-step@v1.5-xl-base"
REPO = Path(__file__).resolve().parents[1]


def server_checkpoints(tmp_path_factory, variants=("xl-sft",)) -> Path:
    """Tiny random checkpoints, written once per test session (shared by every test module)."""
    from cantata.models.tiny import write_tiny_checkpoint

    root = tmp_path_factory.getbasetemp() / "tiny-checkpoints"
    missing = [v for v in variants if not (root / f"acestep-v15-{v}" / "config.json").is_file()]
    if missing:
        with _lock(root.parent / "tiny-checkpoints.lock"):
            write_tiny_checkpoint(root, missing)
    return root


@contextlib.contextmanager
def _lock(path: Path):
    import fcntl

    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def config(tmp_path: Path, root: Path, **overrides) -> ServerConfig:
    base = dict(data_dir=tmp_path / "data", checkpoints=root, download=False, device="cpu", dtype="fp32",
                no_auth=True, port=8080, sweep_interval=3600, webhook_base_delay=0.05)
    return ServerConfig(**{**base, **overrides})


@contextlib.contextmanager
def app_client(cfg: ServerConfig, *, wait_ready: bool = True, keyring=None):
    from cantata.api.app import create_app

    app = create_app(cfg, keyring=keyring)
    with TestClient(app, base_url="http://localhost:8080") as client:
        if wait_ready:
            wait_for(lambda: _ready(client), 60, "server ready")
        yield client


def _ready(client) -> bool:
    state = client.get("/ready").json()
    failed = {m: s for m, s in state["models"].items() if s.startswith("failed")}
    assert not failed, f"model load failed: {failed}"
    return state["ready"]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def new_uuid() -> str:
    return str(uuid.uuid4())


def task(**fields) -> dict:
    """A small, fast audioInference task (30 s, 2 steps) unless fields say otherwise."""
    return {"taskType": "audioInference", "taskUUID": new_uuid(), "model": XL_SFT,
            "positivePrompt": "lo-fi hip hop, dusty drums", "duration": 30, "steps": 2, **fields}


def post(client, tasks, **kw):
    return client.post("/v1", json=tasks, **kw)


def get_response(client, task_uuid: str, **kw):
    return post(client, [{"taskType": "getResponse", "taskUUID": task_uuid}], **kw)


def poll_until_done(client, task_uuid: str, timeout: float = 60, **kw) -> dict:
    """Poll getResponse until no item is processing; returns the last body (every body kept in `.history`)."""
    history = []

    def done():
        body = get_response(client, task_uuid, **kw).json()
        history.append(body)
        return body if not any(i.get("status") == "processing" for i in body.get("data", [])) else None

    body = wait_for(done, timeout, f"task {task_uuid}", interval=0.1)
    body["history"] = history
    return body


def path_of(url: str) -> str:
    return httpx.URL(url).raw_path.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A local HTTP server that records every POST/PUT (webhooks, uploads), answering the first
    `fail_first` of them with a 500 to exercise retries, and serves `files` by path on GET."""

    def __init__(self, fail_first: int = 0, files: dict[str, bytes] | None = None) -> None:
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.files = files or {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append({"method": self.command, "path": self.path, "body": body,
                                          "content_type": self.headers.get("Content-Type")})
                status = 500 if len(receiver.requests) <= receiver.fail_first else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = _handle

            def do_GET(self):
                data = receiver.files.get(self.path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.send_header("Content-Type", "audio/wav")
                self.end_headers()
                self.wfile.write(data or b"")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def json_bodies(self, method: str = "POST") -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests if r["method"] == method]


class ServerProcess:
    """`cantata serve` as a real subprocess (uvicorn), killed with SIGKILL when asked.

    `no_auth=False` serves with API keys (make one first with `add_api_key(data_dir, name)`);
    `env` adds environment variables (e.g. `CANTATA_MAX_INPUT_AUDIO_SECONDS`)."""

    def __init__(self, root: Path, data_dir: Path, port: int, *extra: str, no_auth: bool = True,
                 env: dict[str, str] | None = None) -> None:
        self.args = [sys.executable, "-m", "cantata.cli", "serve", "--checkpoints", str(root), "--data-dir",
                     str(data_dir), "--port", str(port), *(["--no-auth"] if no_auth else []), "--no-download",
                     "--device", "cpu", "--dtype", "fp32", *extra]
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/v1"
        self.log = data_dir.parent / f"server-{port}.log"
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> "ServerProcess":
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2", **self.extra_env}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                return httpx.get(self.url + "/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, "subprocess server ready", interval=0.2)
        return self

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def post(self, tasks, timeout: float = 30):
        return httpx.post(self.url + "/v1", json=tasks, timeout=timeout)


@contextlib.contextmanager
def uvicorn_server(cfg: ServerConfig, *, keyring=None):
    """The app under a real uvicorn in a background thread; yields (base URL, app) once ready."""
    import uvicorn

    from cantata.api.app import create_app
    from cantata.api.headers import UVICORN_OPTIONS

    port = free_port()
    cfg = cfg.replace(port=port)
    app = create_app(cfg, keyring=keyring)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           ws_max_size=cfg.max_request_bytes, **UVICORN_OPTIONS))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server.started, 30, "uvicorn started")

        def ready():
            state = httpx.get(url + "/ready", timeout=5).json()
            assert not any(s.startswith("failed") for s in state["models"].values()), state
            return state["ready"]

        wait_for(ready, 60, "server ready", interval=0.1)
        yield url, app
    finally:
        server.should_exit = True
        thread.join(60)


# -- the command line, API keys and result files -------------------------------------------------


def cantata_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
                cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m cantata.cli ARGS` as a subprocess; text stdout/stderr captured, never raises.
    `env` replaces the API-key variables (CANTATA_API_KEY/RUNWARE_API_KEY are dropped unless given)."""
    base = {k: v for k, v in os.environ.items() if k not in ("CANTATA_API_KEY", "RUNWARE_API_KEY", "CANTATA_URL")}
    return subprocess.run([sys.executable, "-m", "cantata.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or REPO,
                          env={**base, "PYTHONPATH": str(REPO), **(env or {})})


def add_api_key(data_dir: Path, name: str) -> str:
    """A fresh API key made by `cantata keys add NAME` (only its hash lands in data_dir/api-keys)."""
    done = cantata_cli("keys", "--data-dir", str(data_dir), "add", name, timeout=60)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("cnt_") and key not in (data_dir / "api-keys").read_text()  # stored hashed
    return key


@contextlib.contextmanager
def keyed_server(tmp: Path, root: Path, *extra: str, key_name: str = "tester", env: dict[str, str] | None = None):
    """A real `cantata serve` subprocess with API keys on; yields (server, api key)."""
    data = tmp / "data"
    key = add_api_key(data, key_name)
    server = ServerProcess(root, data, free_port(), *extra, no_auth=False, env=env)
    try:
        yield server.start(), key
    finally:
        server.stop()


def read_audio(data: bytes):
    """soundfile's view of an encoded file: (float32 [frames, channels], sample rate)."""
    import io

    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio, rate


def fetch_audio(url: str, headers: dict[str, str] | None = None):
    """Download a result URL and decode it with soundfile: (audio [frames, channels], rate, bytes)."""
    resp = httpx.get(url, headers=headers, timeout=60)
    assert resp.status_code == 200, (url, resp.status_code, resp.text[:300])
    audio, rate = read_audio(resp.content)
    return audio, rate, resp.content
