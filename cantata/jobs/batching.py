"""Which queued tasks run together next: the job layer's one pure batching rule.

Both work sources read it: the in-memory `Scheduler` of a single server process, and the shared
store's `claim_batch` (`claims.StoreQueue`), which hands it the window of queued rows it is about
to claim. Given the ready tasks of one model and the API key that headed that model's previous
batch, `pick_batch` returns the next batch, head first:

* Fairness: API keys take turns. The batch starts with the oldest task of the key that follows
  the previous head's key on a ring of key ids (sorted, so every process sees the same ring and
  a key that had no work rejoins at its place); within a key, oldest first. One client's hundred
  tasks do not starve another's single task.
* Compatibility: the batch is filled, one task per key per round (fair inside the batch too),
  with the oldest tasks that share the head's batch key (`pipeline.batch_key`, the one rule of
  what may share a DiT batch), until it holds `max_batch_size` results. Tasks without a batch key
  run alone.
* Padding: every item is padded to the batch's longest, so a task joins only while the batch's
  padding stays within `max_padding_waste` (extra frames per real frame): the device's own limit
  (`models.speed.batching.max_padding_waste`), none on a CPU, where batching gains nothing per
  frame and padding is pure loss.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from ..models.speed.batching import padding_waste
from .mapping import batch_key
from .task import AudioInferenceTask

@dataclass(frozen=True)
class QueuedTask:
    task_uuid: str
    key_id: str
    model: str
    batch_key: Hashable | None
    duration: float | None  # None: set by a source track
    items: int  # numberResults: rows of the DiT batch it takes
    seq: int  # submission order
    ready: bool = True  # False while its input audio downloads


def queued_task(task: AudioInferenceTask, *, key_id: str, seq: int, ready: bool) -> QueuedTask:
    """What the picker needs to know of a task."""
    return QueuedTask(task_uuid=task.task_uuid, key_id=key_id, model=task.variant.name, batch_key=batch_key(task),
                      duration=task.duration, items=task.number_results, seq=seq, ready=ready)


def _fits(batch: list[QueuedTask], task: QueuedTask, max_padding_waste: float) -> bool:
    durations = [t.duration for t in (*batch, task)]
    if None in durations:  # the length comes from a source track: never padded together
        return False
    return padding_waste(durations) <= max_padding_waste


def pick_batch(candidates: Sequence[QueuedTask], *, last_key: str | None, max_batch_size: int,
               max_padding_waste: float) -> list[QueuedTask]:
    """The next batch from `candidates` (queued tasks of one model, any order; those not ready are
    skipped), head first; [] when none is ready."""
    by_key: dict[str, list[QueuedTask]] = {}
    for task in sorted(candidates, key=lambda t: t.seq):
        if task.ready:
            by_key.setdefault(task.key_id, []).append(task)
    if not by_key:
        return []
    order = _turns(sorted(by_key), last_key)
    head = by_key[order[0]][0]
    batch, size = [head], head.items
    if head.batch_key is None:
        return batch
    fill_order = order[1:] + order[:1]  # the other keys first
    compatible = {key: [t for t in by_key[key] if t is not head and t.batch_key == head.batch_key]
                  for key in fill_order}
    while size < max_batch_size and any(compatible.values()):
        for key in fill_order:  # one task per key per round
            if compatible[key] and size + compatible[key][0].items <= max_batch_size \
                    and _fits(batch, compatible[key][0], max_padding_waste):
                task = compatible[key].pop(0)
                batch.append(task)
                size += task.items
            else:
                compatible[key] = []  # the oldest one does not fit: none of this key's will jump it
    return batch


def _turns(ring: list[str], last_key: str | None) -> list[str]:
    """The keys with work (sorted), starting with the one after `last_key` on the ring."""
    if last_key is None:
        return ring
    start = bisect.bisect_right(ring, last_key)
    return ring[start:] + ring[:start]
