"""What runs next in a single server process: a bounded in-memory view of the queued tasks (the
store is the durable copy). Several processes sharing a store claim from it instead
(`claims.StoreQueue`); both pick with the same rule, `batching.pick_batch` (fairness between API
keys, batch compatibility, padding, batch size).

* Capacity: more than `capacity` queued tasks and `add` raises `QueueFull` (the API answers 429),
  so a burst cannot grow memory or latency without bound.
* Readiness: a task whose input audio is still downloading is queued but not runnable.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from .batching import QueuedTask, pick_batch

__all__ = ["Scheduler", "QueuedTask", "QueueFull"]


class QueueFull(Exception):
    """The queue holds `capacity` tasks already."""


class Scheduler:
    def __init__(self, capacity: int, max_batch_size: int, *, max_padding_waste: float) -> None:
        self.capacity = capacity
        self.max_batch_size = max_batch_size
        self.max_padding_waste = max_padding_waste
        self._tasks: dict[str, QueuedTask] = {}
        self._last_key: dict[str, str] = {}  # model -> key that headed its previous batch
        self._cond = threading.Condition()
        self._closed = False

    # -- queue maintenance -----------------------------------------------------------------------

    def add(self, task: QueuedTask, *, force: bool = False) -> None:
        """Queue a task; `force` skips the capacity check (tasks recovered at start-up)."""
        with self._cond:
            if not force and len(self._tasks) >= self.capacity:
                raise QueueFull(f"the queue is full ({self.capacity} tasks)")
            self._tasks[task.task_uuid] = task
            self._cond.notify_all()
    def has_room(self) -> bool:
        with self._cond:
            return len(self._tasks) < self.capacity

    def mark_ready(self, task_uuid: str) -> None:
        with self._cond:
            task = self._tasks.get(task_uuid)
            if task is not None:
                self._tasks[task_uuid] = replace(task, ready=True)
                self._cond.notify_all()

    def remove(self, task_uuid: str) -> bool:
        with self._cond:
            return self._tasks.pop(task_uuid, None) is not None

    def position(self, task_uuid: str) -> int | None:
        """How many queued tasks of the same model were submitted before this one; None when it is
        not queued. Key turns may run a later task of another key first: a position, not a promise."""
        with self._cond:
            task = self._tasks.get(task_uuid)
            if task is None:
                return None
            return sum(1 for t in self._tasks.values() if t.model == task.model and t.seq < task.seq)

    def depth(self, model: str | None = None) -> int:
        with self._cond:
            return sum(1 for t in self._tasks.values() if model is None or t.model == model)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake every waiting worker; `next_batch` returns [] from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- picking a batch -----------------------------------------------------------------------

    def next_batch(self, model: str, timeout: float | None = None) -> list[QueuedTask]:
        """Take the next batch for `model` off the queue, waiting up to `timeout` seconds for work
        ([] on timeout or once closed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                batch = self._pick(model)
                if batch:
                    for task in batch:
                        del self._tasks[task.task_uuid]
                    return batch
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            return []

    def _pick(self, model: str) -> list[QueuedTask]:
        batch = pick_batch([t for t in self._tasks.values() if t.model == model],
                           last_key=self._last_key.get(model), max_batch_size=self.max_batch_size,
                           max_padding_waste=self.max_padding_waste)
        if batch:
            self._last_key[model] = batch[0].key_id
        return batch
