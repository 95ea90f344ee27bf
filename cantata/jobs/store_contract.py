"""The store contract: what the job layer needs from a durable store, and what each backend promises.

Two backends implement all of it (`LeasingStore`): `cantata.jobs.store.Store` (SQLite, the
embedded default, shared by the worker processes of one machine) and
`cantata.jobs.pg_store.PostgresStore` (PostgreSQL, shared by many processes and machines).
`tests/test_store_conformance.py` runs one suite unchanged against both.

`JobStore` lists the operations the engine, the input downloader, the response builder, the
scheduler and the delivery outbox call. Guarantees every backend gives:

* Durability: a call that returned has committed; a crash after it loses nothing it wrote.
* Guarded transitions: every status change is one conditional update, so of two racing callers
  (two threads, two processes, two machines) exactly one wins and the loser learns it from the
  return value instead of overwriting the winner. Terminal statuses are never left.
* Atomic finish: results, their media rows, the deliveries they owe and the final status are
  one transaction; a refused `finish` writes nothing.
* Times are Unix seconds (float) supplied by the caller, so a test (or a replay) controls them.
* Schema versions: a backend creates or migrates its schema on open and refuses, with
  `StoreError` naming the version it found, a database written by a newer Cantata.
* `seq` is the submission order; listings come back in it.
* A `TaskRecord` decodes its task (`record.task`) and request (`record.request`) on first use
  and keeps them, so a reader pays for the JSON once per record, not at every read.
* The outbox is claimed, not listed: `claim_deliveries` hands each due row to one claimer and
  holds it for a while, so any number of delivery nodes share it without sending the same
  attempt twice; the retry schedule is stored (`delivery_attempted(retry_at=)`), so a restarted
  node resumes owed deliveries on time. A node that dies holding a row lets the hold lapse and
  another node retries it: deliveries are at-least-once, never lost.

`LeasingStore` adds what several worker processes sharing one store need (issue 7, item 3):
a worker *claims* a batch in one transaction and holds each task under a `Lease` (worker id, a
fencing token that no other claim ever reuses, an expiry); progress renews the lease; a sweeper
puts tasks whose lease expired back in the queue (the attempt stays counted) or fails them with
`taskInterrupted` past the cap; a `finish` or `requeue` carrying a lease commits only while that
lease is still the task's current one, so a worker frozen past its lease can never overwrite the
result of the retry. How the backends serialize claims differs, what they promise does not:
PostgreSQL locks only the rows it claims (`FOR UPDATE SKIP LOCKED`) so claimers never wait for
each other; SQLite runs each claim as one `BEGIN IMMEDIATE` transaction, so claims (milliseconds
each) take turns on the file's write lock. Either way no task is ever claimed twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from .store import (CANCELLED, ERROR, QUEUED, RUNNING, SUCCESS, TERMINAL, Claim, Delivery, DuplicateTask, Lease,
                    MediaRecord, NewDelivery, NewResult, Picker, ResultRecord, StoreError, SweepOutcome, TaskRecord)

__all__ = ["JobStore", "LeasingStore", "Lease", "Claim", "SweepOutcome", "Picker", "QUEUED", "RUNNING", "SUCCESS",
           "ERROR", "CANCELLED", "TERMINAL", "TaskRecord", "ResultRecord", "MediaRecord", "Delivery", "NewResult",
           "NewDelivery", "StoreError", "DuplicateTask"]


@runtime_checkable
class JobStore(Protocol):
    """The operations the job layer uses; see the module docstring for the guarantees."""

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""

    def writable(self) -> bool:
        """Readiness probe: True when a write can be committed right now (never raises)."""

    # -- tasks -------------------------------------------------------------------------------------

    def insert_task(self, *, uuid: str, key_id: str, model: str, task_json: str, request_json: str,
                    inputs: dict[str, str], now: float, ws_session: str | None = None) -> int:
        """Insert a `queued` task with 0 attempts; returns its `seq`. Raises `DuplicateTask` if the
        uuid exists (in any status), writing nothing."""

    def get_task(self, uuid: str) -> TaskRecord | None: ...

    def tasks_with_status(self, *statuses: str) -> list[TaskRecord]:
        """The tasks in any of `statuses`, in `seq` order."""

    def tasks_of_key(self, key_id: str, *, before_seq: int | None, limit: int) -> list[TaskRecord]:
        """One key's tasks, newest first (descending `seq`), only those with `seq < before_seq`
        when given: one page of its history, the next page starting below the last `seq` seen."""

    def tasks_of_ws_session(self, key_id: str, ws_session: str) -> list[TaskRecord]:
        """The tasks inserted with this `ws_session` (the WebSocket session a sync task was sent
        over) and owned by `key_id`, in `seq` order: what any node replays when a client resumes
        that session."""

    def delete_task(self, uuid: str) -> bool:
        """Forget a task with its results and outbox rows (cascade); the result files' media rows
        are left to the caller. False when there was no such task."""

    def queue_depth(self, model: str | None = None) -> int:
        """How many tasks are queued (of `model`, when given), counted in the store, so every
        API node and scheduler sees the same queue."""

    def queued_ahead(self, uuid: str) -> int | None:
        """A queued task's 0-based queue position: how many queued tasks of its model have a
        smaller `seq`. None when the task is not queued (unknown, running or finished)."""

    def mark_running(self, uuid: str, now: float) -> bool:
        """queued -> running: counts an attempt, sets `started_at`, progress 0. False (nothing
        written) if the task is not queued; of concurrent callers exactly one gets True."""

    def requeue(self, uuid: str, *, uncount_attempt: bool) -> None:
        """running -> queued, progress 0, `started_at` cleared; `uncount_attempt` takes back the
        attempt its start counted. No effect on a task that is not running."""

    def set_progress(self, uuid: str, progress: int) -> None:
        """Record progress (0..100) of a running task; no effect otherwise."""

    def set_input(self, uuid: str, url: str, media_id: str) -> None:
        """Merge `url -> media_id` into the task's inputs map (other entries kept); no effect on
        an unknown task."""

    def finish(self, uuid: str, status: str, *, now: float, expires_at: float,
               error: dict[str, Any] | None = None, results: Sequence[NewResult] = (),
               owner: str = "", deliveries: Sequence[NewDelivery] = (),
               from_statuses: Sequence[str] = (QUEUED, RUNNING)) -> bool:
        """One transaction: status (progress 100 on success), error, `finished_at`, `expires_at`,
        one result row and one `result` media row (owned by `owner`) per result, one pending
        delivery per delivery (due at `now`). False and nothing written unless the task was in
        `from_statuses`."""

    def results(self, uuid: str) -> list[ResultRecord]:
        """The task's results by `idx`."""

    # -- media ---------------------------------------------------------------------------------

    def insert_media(self, record: MediaRecord) -> None: ...

    def get_media(self, media_id: str) -> MediaRecord | None:
        """Looked up case-insensitively (ids are stored lower-case)."""

    def delete_media(self, media_id: str) -> None: ...

    # -- outbox --------------------------------------------------------------------------------

    def deliveries(self, uuid: str) -> list[Delivery]:
        """The task's deliveries in creation order."""

    def pending_deliveries(self) -> list[Delivery]:
        """Every delivery not settled yet, in creation order."""

    def claim_deliveries(self, *, now: float, hold_seconds: float, limit: int = 32) -> list[Delivery]:
        """In one transaction: up to `limit` pending deliveries that are due (`next_attempt_at <=
        now`) and are the oldest pending row of their task (a task's rows go one at a time in
        creation order: its uploads before its webhook), oldest first; each one's
        `next_attempt_at` becomes `now + hold_seconds`, and the rows come back with it. Until the
        hold ends no other claimer sees them as due, so two concurrent claimers (threads,
        processes, nodes) never get the same row; a claimer that dies lets the hold lapse and
        the row is claimed again (at-least-once). `hold_seconds` must outlast one attempt, or a
        slow attempt is sent twice. Attempts are not counted here (`delivery_attempted`)."""

    def delivery_attempted(self, delivery_id: int, *, now: float, error: str | None,
                           retry_at: float | None = None) -> None:
        """Count one try; a non-None `error` becomes `last_error` (None keeps the previous one);
        a `retry_at` becomes `next_attempt_at` (the stored retry schedule: the row is due again
        then, on whichever node claims it), None leaves it as it was."""

    def delivery_settled(self, delivery_id: int, status: str, *, now: float, error: str | None = None) -> None:
        """No more tries: status 'done' or 'failed'."""

    # -- expiry --------------------------------------------------------------------------------

    def expired_media(self, now: float) -> list[MediaRecord]:
        """Media rows with `expires_at <= now` (the caller deletes the file, then the row)."""

    def delete_expired_tasks(self, now: float) -> int:
        """Delete finished tasks with `expires_at <= now` with their results and deliveries;
        returns how many tasks. Media rows expire on their own (`expired_media`)."""


@runtime_checkable
class LeasingStore(JobStore, Protocol):
    """A store several worker processes can share: claims, leases, a sweeper and fencing."""

    def claim_batch(self, model: str, *, worker: str, now: float, lease_seconds: float, pick: Picker,
                    window: int = 64) -> list[Claim]:
        """In one transaction: read up to `window` queued tasks of `model` (oldest first), let
        `pick` choose, and mark the chosen ones running (attempt counted) under a fresh lease of
        `worker` until `now + lease_seconds`, each with its own new token; the head's key becomes
        the previous key passed to the next `pick` of this model, on any worker. Concurrent
        claims never claim a task twice: PostgreSQL skips rows another transaction holds (never
        waits for them), SQLite runs claims one after the other. Chosen records that were not
        among the candidates are ignored. [] when nothing could be claimed."""

    def renew_lease(self, lease: Lease, *, now: float, lease_seconds: float,
                    progress: int | None = None) -> Lease | None:
        """Extend a held lease to `now + lease_seconds` (and record `progress`); None when the
        lease is no longer the task's current one (cancelled, finished, swept, reclaimed): the
        worker should stop working on the task."""

    def finish(self, uuid: str, status: str, *, now: float, expires_at: float,
               error: dict[str, Any] | None = None, results: Sequence[NewResult] = (),
               owner: str = "", deliveries: Sequence[NewDelivery] = (),
               from_statuses: Sequence[str] = (QUEUED, RUNNING), lease: Lease | None = None) -> bool:
        """`JobStore.finish`; with `lease`, it also requires that lease to be the task's current
        one (fencing), else False and nothing written."""

    def requeue(self, uuid: str, *, uncount_attempt: bool, lease: Lease | None = None) -> None:
        """`JobStore.requeue` (the lease is released); with `lease`, only while it is current."""

    def sweep_leases(self, now: float, *, max_attempts: int, error: dict[str, Any], expires_at: float,
                     deliveries_for: Callable[[TaskRecord], Sequence[NewDelivery]]) -> SweepOutcome:
        """One sweeper at a time: every running task whose lease expired before `now` goes back
        to the queue with its attempt still counted, or, once it has had `max_attempts` attempts,
        finishes as `error` (with `error`, `expires_at` and the deliveries `deliveries_for`
        gives) in the same transaction. On PostgreSQL a sweeper finding another one at work
        returns at once with `ran=False`; on SQLite sweeps queue on the write lock and a later
        one finds the earlier one's work done. A task running without a lease (started by
        `mark_running`) is never swept."""
