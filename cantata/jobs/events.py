"""Task events across processes: how an API node hears that a worker elsewhere made progress or
finished, and how an idle worker hears that a task was queued.

Inside one process the engine calls its listeners directly. Across processes the store stays the
truth and events only say "look again": a waiter re-reads the task from the store when woken, and
at least once a second anyway (`api.watch`), so a lost event costs latency, never correctness.

* `InProcessBus`: nothing crosses processes (a single server, or several processes on one SQLite
  file, which see each other's changes by polling: claims every half second, waiters every second).
* `PostgresBus`: PostgreSQL's LISTEN/NOTIFY on one channel. Payload `"<origin> <taskUUID> <kind>"`;
  a process ignores its own notifications (its listeners heard them already). The listening
  connection reconnects after an error; notifications sent while it was down are lost, which the
  periodic re-reads cover.
"""

from __future__ import annotations

import logging
import threading
import uuid as uuidlib
from collections.abc import Callable
from typing import Protocol

from ..logfmt import kv

log = logging.getLogger("cantata.events")

CHANNEL = "cantata_events"
_RECONNECT_AFTER = 1.0  # seconds between attempts to re-open a lost LISTEN connection

Deliver = Callable[[str, str], None]  # (taskUUID, kind)


class EventBus(Protocol):
    def publish(self, task_uuid: str, kind: str) -> None:
        """Tell the other processes (never raises: an event is a hint)."""

    def start(self, deliver: Deliver) -> None:
        """Call `deliver(taskUUID, kind)` for every event another process publishes."""

    def close(self) -> None: ...


class InProcessBus:
    """No cross-process events (see the module docstring)."""

    def publish(self, task_uuid: str, kind: str) -> None:
        return None

    def start(self, deliver: Deliver) -> None:
        return None

    def close(self) -> None:
        return None


class PostgresBus:
    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.origin = uuidlib.uuid4().hex[:12]
        self._send_lock = threading.Lock()
        self._sender = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self, task_uuid: str, kind: str) -> None:
        import psycopg

        with self._send_lock:
            for _ in range(2):  # a dropped connection is re-opened once
                try:
                    if self._sender is None or self._sender.closed:
                        self._sender = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
                    self._sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{self.origin} {task_uuid} {kind}"))
                    return
                except psycopg.Error as exc:
                    log.warning(kv("events.publish_failed", error=str(exc)[:200]))
                    self._sender = None

    def start(self, deliver: Deliver) -> None:
        self._thread = threading.Thread(target=self._listen, args=(deliver,), name="cantata-events", daemon=True)
        self._thread.start()

    def _listen(self, deliver: Deliver) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            origin, _, rest = note.payload.partition(" ")
                            task_uuid, _, kind = rest.partition(" ")
                            if origin != self.origin and task_uuid and kind:
                                deliver(task_uuid, kind)
            except psycopg.Error as exc:
                log.warning(kv("events.listen_failed", error=str(exc)[:200]))
                self._stop.wait(_RECONNECT_AFTER)
            except Exception:
                log.exception(kv("events.deliver_failed"))
                self._stop.wait(_RECONNECT_AFTER)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._send_lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None
