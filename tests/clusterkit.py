"""A Cantata deployment of several real processes on this machine, for the role, chaos and scaling
runs: API-only nodes (`cantata serve --no-worker`) and worker processes (`cantata worker`) over
one shared store (a SQLite file or a PostgreSQL URL) and one media storage (a folder or
`s3://bucket/prefix`), all on the tiny demo checkpoints.

Every process is a child of the test, in its own process group, logging to a file next to the
data directory; `Node.kill()` is `kill -9`, `freeze()`/`thaw()` are SIGSTOP/SIGCONT (a frozen
worker neither runs nor renews its leases, exactly like a machine that stalled). `Cluster.close()`
stops whatever is left (a frozen process is thawed first so that SIGTERM can reach it).

Use:
    with Cluster(root, data_dir, store=url, media=media, env=aws_env) as cluster:
        a = cluster.api()           # started, /ready answered
        w = cluster.worker()        # started; `wait_loaded()` waits for its model
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from serverkit import REPO, free_port, wait_for

#: What every demo task of these runs asks for: one sampler step, the shortest duration.
FAST = {"steps": 1, "duration": 30}


class Node:
    """One `cantata` subprocess (an API node or a worker)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, url: str | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.url = url
        self.proc: subprocess.Popen | None = None

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/v1"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> "Node":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=REPO,
                                         start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _check_alive(self) -> None:
        if not self.alive():
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def wait_ready(self, timeout: float = 120) -> "Node":
        """An API node: until /ready answers 200."""

        def ready():
            self._check_alive()
            try:
                return httpx.get(self.url + "/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, f"{self.name} ready", interval=0.2)
        return self

    def wait_loaded(self, timeout: float = 120) -> "Node":
        """A worker: until its model is loaded (its log says `model.loaded`)."""
        return self.wait_log("model.loaded", timeout)

    def wait_log(self, text: str, timeout: float = 60, count: int = 1) -> "Node":
        def seen():
            self._check_alive()
            return self.tail(10**9).count(text) >= count

        wait_for(seen, timeout, f"{text!r} in {self.name}'s log", interval=0.2)
        return self

    def post(self, tasks, timeout: float = 60) -> httpx.Response:
        return httpx.post(self.url + "/v1", json=tasks, timeout=timeout)

    def kill(self) -> None:
        """kill -9: no shutdown, no requeue, leases left to lapse."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def freeze(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self, timeout: float = 60) -> None:
        if not self.alive():
            return
        self.thaw()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class Cluster:
    """Starts nodes that share `store` and `media`; `env` is added to every process's environment
    (e.g. the AWS variables of an S3 media storage, `CANTATA_LEASE_SECONDS`)."""

    def __init__(self, checkpoints: Path, data_dir: Path, *, store: str | None = None, media: str | None = None,
                 env: dict[str, str] | None = None, serve_flags: tuple[str, ...] = ("--allow-private-urls",),
                 worker_flags: tuple[str, ...] = ("--allow-private-urls",)) -> None:
        self.checkpoints = checkpoints
        self.data_dir = data_dir
        self.backend = [*(("--store", store) if store else ()), *(("--media", media) if media else ())]
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                    **(env or {})}
        self.serve_flags = serve_flags
        self.worker_flags = worker_flags
        self.nodes: list[Node] = []

    def _common(self) -> list[str]:
        return ["--demo", "--checkpoints", str(self.checkpoints), "--data-dir", str(self.data_dir), "--no-download",
                "--planner", "none", "--dtype", "fp32", *self.backend]

    def _log(self, name: str) -> Path:
        return self.data_dir.parent / "logs" / f"{name}.log"

    def api(self, *extra: str, name: str | None = None, wait: bool = True) -> Node:
        """`cantata serve --no-worker --no-auth` on a free port."""
        port = free_port()
        name = name or f"api-{port}"
        argv = [sys.executable, "-m", "cantata.cli", "serve", "--no-worker", "--no-auth", "--port", str(port),
                "--device", "cpu", *self._common(), *self.serve_flags, *extra]
        node = self._add(Node(name, argv, self.env, self._log(name), url=f"http://127.0.0.1:{port}"))
        return node.wait_ready() if wait else node

    def serve(self, *extra: str, name: str | None = None, wait: bool = True) -> Node:
        """`cantata serve --no-auth` (all-in-one, or with `--devices …` one worker process per device)."""
        port = free_port()
        name = name or f"serve-{port}"
        argv = [sys.executable, "-m", "cantata.cli", "serve", "--no-auth", "--port", str(port), *self._common(),
                *self.serve_flags, *extra]
        node = self._add(Node(name, argv, self.env, self._log(name), url=f"http://127.0.0.1:{port}"))
        return node.wait_ready() if wait else node

    def worker(self, *extra: str, name: str | None = None, device: str = "cpu") -> Node:
        """`cantata worker` (no HTTP)."""
        name = name or f"worker-{len(self.nodes)}"
        argv = [sys.executable, "-m", "cantata.cli", "worker", "--device", device, *self._common(),
                *self.worker_flags, *extra]
        return self._add(Node(name, argv, self.env, self._log(name)))

    def _add(self, node: Node) -> Node:
        self.nodes.append(node)
        return node.start()

    def close(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def children_of(pid: int) -> list[int]:
    """The direct child processes of `pid` (Linux /proc; a child belongs to the thread that
    started it, so every thread's list is read)."""
    found = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in path.read_text().split()]
        except OSError:  # the thread ended meanwhile
            pass
    return sorted(found)


def audio_header_ok(data: bytes) -> bool:
    """A WAV (RIFF…WAVE) or MP3 (ID3 tag or an MPEG frame sync) file's first bytes."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return True
    return data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0)


def monotonic_seconds_since(start: float) -> float:
    return round(time.monotonic() - start, 1)
