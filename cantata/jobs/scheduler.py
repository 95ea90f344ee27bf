"""What runs next: a bounded in-memory view of the queued tasks (the store is the durable copy).

* Capacity: more than `capacity` queued tasks and `add` raises `QueueFull` (the API answers 429),
  so a burst cannot grow memory or latency without bound.
* Fairness: API keys take turns. Each batch starts with the oldest task of the next key in
  round-robin order that has work for the model, so one client's hundred tasks do not starve
  another's single task; within a key, oldest first.
* Batching: the batch is then filled, again one key at a time, with the oldest tasks that share
  the head's batch key (same model and sampler settings: `CantataPipeline.batch_key`) and a
  similar length, until the batch holds `max_batch_size` results. Tasks without a batch key
  (audio-to-audio) always run alone.
* Readiness: a task whose input audio is still downloading is queued but not runnable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, replace

#: Durations within this fraction of each other may share a batch: every item is padded to the
#: longest, so mixing 30 s with 300 s would spend most of the batch on padding.
LENGTH_TOLERANCE = 0.25


class QueueFull(Exception):
    """The queue holds `capacity` tasks already."""


@dataclass(frozen=True)
class QueuedTask:
    task_uuid: str
    key_id: str
    model: str
    batch_key: Hashable | None
    duration: float | None  # None: set by a source track
    items: int  # numberResults: rows of the DiT batch it takes
    seq: int  # submission order
    ready: bool = True


def _similar(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a == b
    return abs(a - b) <= LENGTH_TOLERANCE * max(a, b)


class Scheduler:
    def __init__(self, capacity: int, max_batch_size: int) -> None:
        self.capacity = capacity
        self.max_batch_size = max_batch_size
        self._tasks: dict[str, QueuedTask] = {}
        self._key_order: list[str] = []  # round-robin order: keys in order of first appearance
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
            if task.key_id not in self._key_order:
                self._key_order.append(task.key_id)
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
        by_key: dict[str, list[QueuedTask]] = {}
        for task in sorted(self._tasks.values(), key=lambda t: t.seq):
            if task.model == model and task.ready:
                by_key.setdefault(task.key_id, []).append(task)
        if not by_key:
            return []
        order = self._rotation(model, by_key)
        head = by_key[order[0]][0]
        self._last_key[model] = head.key_id
        batch, size = [head], head.items
        if head.batch_key is None:
            return batch
        fill_order = order[1:] + order[:1]  # the other keys first: fairness inside the batch too
        compatible = {key: [t for t in by_key[key] if t is not head and t.batch_key == head.batch_key
                            and _similar(t.duration, head.duration)] for key in fill_order}
        while size < self.max_batch_size and any(compatible.values()):
            for key in fill_order:  # one task per key per round
                if compatible[key] and size + compatible[key][0].items <= self.max_batch_size:
                    task = compatible[key].pop(0)
                    batch.append(task)
                    size += task.items
                else:
                    compatible[key] = []  # the oldest one does not fit: none of this key's will jump it
        return batch

    def _rotation(self, model: str, by_key: dict[str, list[QueuedTask]]) -> list[str]:
        """Keys with work, starting with the one after the key that went last for this model."""
        keys = [k for k in self._key_order if k in by_key]
        last = self._last_key.get(model)
        if last in self._key_order:
            pos = self._key_order.index(last)
            after = [k for k in self._key_order[pos + 1:] + self._key_order[:pos + 1] if k in by_key]
            keys = after
        return keys
