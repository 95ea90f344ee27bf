"""`cantata serve --devices cuda:0,cuda:1,…`: one worker process per device on this machine.

The serving process keeps the API (and the embedded store, shared as one SQLite file, or the
configured PostgreSQL) and starts `cantata worker --device D` for each device with its own exact
configuration (`ServerConfig.as_environment`). Why processes, not threads: each device gets its
own CUDA context, allocator and GIL, and a worker that crashes (or is killed) takes no other down.

A worker that exits while the server runs is started again after a pause that doubles up to a
minute (a model that cannot load must not spin). Workers get SIGTERM when the server stops (they
finish or requeue their batch within the grace period) and, on Linux, die with the server if it
is killed outright (PR_SET_PDEATHSIG), so no orphan keeps a device busy; their claimed tasks then
lapse and are retried (leases).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading

from .logfmt import kv

log = logging.getLogger("cantata.devices")

_FIRST_PAUSE, _MAX_PAUSE = 1.0, 60.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the worker outlives a killed server until its next failed claim


class DeviceWorkers:
    def __init__(self, config) -> None:
        self.config = config
        self._procs: dict[int, subprocess.Popen] = {}  # by slot: a device may be named twice (cpu,cpu)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for slot, device in enumerate(self.config.devices):
            thread = threading.Thread(target=self._keep_running, args=(slot, device),
                                      name=f"cantata-device-{slot}-{device}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _environment(self, device: str) -> dict[str, str]:
        worker = self.config.replace(devices=(), role="worker", device=device)
        return {**os.environ, **worker.as_environment()}

    def _keep_running(self, slot: int, device: str) -> None:
        pause = _FIRST_PAUSE
        while not self._stop.is_set():
            proc = subprocess.Popen([sys.executable, "-m", "cantata.cli", "worker"], env=self._environment(device),
                                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
            self._procs[slot] = proc
            log.info(kv("device.worker_started", device=device, pid=proc.pid))
            code = proc.wait()
            if self._stop.is_set():
                return
            log.error(kv("device.worker_exited", device=device, pid=proc.pid, code=code, restart_in=pause))
            self._stop.wait(pause)
            pause = min(_MAX_PAUSE, pause * 2)

    def stop(self, grace: float) -> None:
        self._stop.set()
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for slot, proc in self._procs.items():
            try:
                proc.wait(grace + 10)
            except subprocess.TimeoutExpired:
                log.warning(kv("device.worker_killed", device=self.config.devices[slot], pid=proc.pid))
                proc.kill()
