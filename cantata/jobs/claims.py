"""Work from a shared store: where the workers of many processes (and machines) get their batches.

A single server process queues in memory (`scheduler.Scheduler`). Processes that share one store
(`--store postgresql://…`, or several worker processes on one SQLite file) instead *claim* from
it: `StoreQueue` offers the engine and its workers the same interface, backed by the store's
`claim_batch` (one transaction: the picker `batching.pick_batch` chooses among the queued rows, the
chosen ones become running under a lease of this worker). Nothing is held in memory but the leases
of the tasks this process runs; queue depth and positions are the store's.

Leases: `keep_alive` renews every held lease (with the task's progress) well before it lapses;
a lease that cannot be renewed (the task was cancelled, or swept after this process froze past
its lease) is dropped and reported, and the engine stops working on the task. Every write of a
held task carries its lease (`lease(uuid)`), so a stale worker's write never commits (fencing).

Wake-ups: a worker waiting for work polls the store every `poll_interval` seconds, and wakes at
once when `wake()` is called (a task queued by this process, or a "queued" event from another
process on an event bus).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .batching import QueuedTask, pick_batch, queued_task
from .inputs import is_url
from .store_contract import Lease, LeasingStore, TaskRecord

__all__ = ["StoreQueue"]


def ready(record: TaskRecord) -> bool:
    """A queued task may run once every input URL it names was downloaded into media."""
    task = record.task
    refs = [r for r in (task.inputs.audio, *task.inputs.reference_audios) if r]
    return all(r in record.inputs for r in refs if is_url(r))


class StoreQueue:
    def __init__(self, store: LeasingStore, *, worker_id: str, capacity: int, max_batch_size: int,
                 max_padding_waste: float, lease_seconds: float, poll_interval: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.worker_id = worker_id
        self.capacity = capacity
        self.max_batch_size = max_batch_size
        self.max_padding_waste = max_padding_waste
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.clock = clock
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False

    # -- the queue, as the engine sees it ---------------------------------------------------------

    def add(self, task: QueuedTask, *, force: bool = False) -> None:
        """The task is in the store already: just wake this process's waiting workers."""
        self.wake()

    def has_room(self) -> bool:
        return self.store.queue_depth() < self.capacity

    def mark_ready(self, task_uuid: str) -> None:
        self.wake()  # readiness is read from the row's inputs at the next claim

    def remove(self, task_uuid: str) -> bool:
        """True when no worker of this process holds the task (a queued task's cancel needs no
        worker's answer); the store's own status keeps it from being claimed."""
        with self._lock:
            return task_uuid not in self._leases

    def depth(self, model: str | None = None) -> int:
        return self.store.queue_depth(model)

    def position(self, task_uuid: str) -> int | None:
        return self.store.queued_ahead(task_uuid)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # -- claiming --------------------------------------------------------------------------------

    def next_batch(self, model: str, timeout: float | None = None) -> list[QueuedTask]:
        """Claim the next batch of `model`, waiting up to `timeout` seconds for one ([] on timeout
        or once closed). The tasks come back running, each under a lease of this worker."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            self._wake.clear()
            claims = self.store.claim_batch(model, worker=self.worker_id, now=self.clock(),
                                            lease_seconds=self.lease_seconds, pick=self._pick)
            if claims:
                with self._lock:
                    self._leases.update((c.lease.uuid, c.lease) for c in claims)
                return [queued_task(c.record.task, key_id=c.record.key_id, seq=c.record.seq, ready=True)
                        for c in claims]
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self._wake.wait(self.poll_interval if remaining is None else min(self.poll_interval, remaining))
        return []

    def _pick(self, candidates: list[TaskRecord], last_key: str | None) -> list[TaskRecord]:
        by_uuid = {r.uuid: r for r in candidates}
        offered = [queued_task(r.task, key_id=r.key_id, seq=r.seq, ready=ready(r)) for r in candidates]
        picked = pick_batch(offered, last_key=last_key, max_batch_size=self.max_batch_size,
                            max_padding_waste=self.max_padding_waste)
        return [by_uuid[t.task_uuid] for t in picked]

    # -- leases ----------------------------------------------------------------------------------

    def lease(self, task_uuid: str) -> Lease | None:
        """This process's lease on a task it runs (None: not held here)."""
        with self._lock:
            return self._leases.get(task_uuid)

    def release(self, task_uuid: str) -> None:
        """The task's outcome was written (or given up): stop renewing its lease."""
        with self._lock:
            self._leases.pop(task_uuid, None)

    def held(self) -> list[str]:
        with self._lock:
            return list(self._leases)

    def keep_alive(self, progress_of: Callable[[str], int | None]) -> list[str]:
        """Renew every held lease (recording each task's progress); returns the tasks whose lease
        was lost, which are no longer held."""
        lost = []
        for uuid in self.held():
            lease = self.lease(uuid)
            if lease is None:
                continue
            renewed = self.store.renew_lease(lease, now=self.clock(), lease_seconds=self.lease_seconds,
                                             progress=progress_of(uuid))
            with self._lock:
                if renewed is None:
                    if self._leases.pop(uuid, None) is not None:
                        lost.append(uuid)
                elif uuid in self._leases:
                    self._leases[uuid] = renewed
        return lost
