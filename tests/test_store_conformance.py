"""One conformance suite for the store contract (`cantata.jobs.store_contract`), run unchanged
against every backend: SQLite (a file per test) and PostgreSQL (a real server, a database per
test; see pgserver.py). The lease tests run against the backends that implement `LeasingStore`.

The store treats task and request JSON as opaque text, so the tasks here are bare rows."""

from __future__ import annotations

import inspect
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from cantata.jobs.store import Store
from cantata.jobs.store_contract import (CANCELLED, ERROR, QUEUED, RUNNING, SUCCESS, DuplicateTask, JobStore, Lease,
                                         LeasingStore, MediaRecord, NewDelivery, NewResult, StoreError, TaskRecord)
from pgserver import postgres_server, postgres_url  # noqa: F401  (fixtures)
from serverkit import new_uuid
from unavailable import unavailable

INTERRUPTED = {"code": "taskInterrupted", "message": "the worker running this task stopped answering"}


# -- backends ---------------------------------------------------------------------------------------

@dataclass
class Backend:
    name: str
    open: Callable[[], JobStore]  # the same database every time
    set_schema_version: Callable[[int], None]
    url: str  # where the database is, for a second connection of our own


def _postgres_store_class():
    try:
        from cantata.jobs.pg_store import PostgresStore
    except ImportError as exc:
        unavailable(f"the PostgreSQL store cannot be imported: {exc}")
    return PostgresStore


def _sqlite_backend(tmp_path) -> Backend:
    path = tmp_path / "db.sqlite"

    def set_version(version: int) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))

    return Backend("sqlite", lambda: Store(path), set_version, str(path))


def _postgres_backend(url: str) -> Backend:
    import psycopg

    store_class = _postgres_store_class()

    def set_version(version: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE meta SET value=%s WHERE key='schema_version'", (str(version),))

    return Backend("postgresql", lambda: store_class(url), set_version, url)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path) -> Backend:
    if request.param == "sqlite":
        return _sqlite_backend(tmp_path)
    return _postgres_backend(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(backend) -> Iterator[JobStore]:
    opened = backend.open()
    yield opened
    opened.close()


@pytest.fixture(params=["postgresql"])
def leasing_backend(request) -> Backend:
    """The backends that implement `LeasingStore` (SQLite does not: see store_contract)."""
    return _postgres_backend(request.getfixturevalue("postgres_url"))


@pytest.fixture
def leasing(leasing_backend) -> Iterator[LeasingStore]:
    opened = leasing_backend.open()
    yield opened
    opened.close()


def add(store: JobStore, uuid: str | None = None, *, key: str = "alice", model: str = "xl-sft",
        now: float = 1.0) -> str:
    uuid = uuid or new_uuid()
    store.insert_task(uuid=uuid, key_id=key, model=model, task_json=f'{{"taskUUID": "{uuid}"}}',
                      request_json='{"taskType": "audioInference"}', inputs={}, now=now)
    return uuid


def new_result(idx: int, *, expires_at: float = 500.0) -> NewResult:
    return NewResult(idx=idx, audio_uuid=new_uuid(), seed=2**63 - 1 - idx, storage_key=f"ab/{idx}.mp3", ext=".mp3",
                     mime="audio/mpeg", size=1000 + idx, gpu_seconds=0.25, expires_at=expires_at)


def media(media_id: str, *, expires_at: float = 100.0, owner: str = "alice") -> MediaRecord:
    return MediaRecord(id=media_id, kind="upload", storage_key=f"{media_id[:2]}/{media_id}.wav", ext=".wav",
                       mime="audio/wav", size=44, owner=owner, created_at=1.0, expires_at=expires_at)


# -- the contract itself ------------------------------------------------------------------------------

def _contract_methods(protocol: type) -> list[str]:
    return sorted(name for name in dir(protocol) if not name.startswith("_") and callable(getattr(protocol, name)))


@pytest.mark.parametrize("implementation,protocol", [("sqlite", JobStore), ("postgresql", LeasingStore)])
def test_each_backend_has_every_contract_operation_with_its_signature(implementation, protocol):
    cls = Store if implementation == "sqlite" else _postgres_store_class()
    for name in _contract_methods(protocol):
        want = inspect.signature(getattr(protocol, name))
        got = inspect.signature(getattr(cls, name))
        for param in want.parameters.values():
            assert param.name in got.parameters, f"{cls.__name__}.{name} lacks {param.name}"
            mine = got.parameters[param.name]
            assert (mine.kind, mine.default) == (param.kind, param.default), f"{cls.__name__}.{name}({param.name})"
        extra = [p for p in got.parameters.values() if p.name not in want.parameters and p.kind not in (
            p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        assert all(p.default is not p.empty for p in extra), f"{cls.__name__}.{name}: extra required parameters"
    assert JobStore in LeasingStore.__mro__


# -- tasks ----------------------------------------------------------------------------------------------

def test_insert_get_and_duplicate_uuids(store):
    first = add(store, key="alice", now=10.0)
    seq = store.insert_task(uuid=(second := new_uuid()), key_id="bob", model="turbo", task_json="{}",
                            request_json="{}", inputs={"https://example.com/a.wav": "m1"}, now=11.0)
    record = store.get_task(second)
    assert record == TaskRecord(uuid=second, key_id="bob", model="turbo", status=QUEUED, attempts=0, progress=0,
                                task_json="{}", request_json="{}", inputs={"https://example.com/a.wav": "m1"},
                                error=None, created_at=11.0, started_at=None, finished_at=None, expires_at=None,
                                seq=seq)
    assert store.get_task(first).seq < seq
    with pytest.raises(DuplicateTask):
        store.insert_task(uuid=first, key_id="mallory", model="turbo", task_json="[]", request_json="[]", inputs={},
                          now=12.0)
    assert (store.get_task(first).key_id, store.get_task(first).model) == ("alice", "xl-sft")  # untouched
    store.finish(first, CANCELLED, now=13.0, expires_at=99.0)
    with pytest.raises(DuplicateTask):  # a finished task's uuid stays taken too
        add(store, first)
    assert store.get_task(new_uuid()) is None


def test_tasks_with_status_lists_in_submission_order(store):
    uuids = [add(store, now=float(i)) for i in range(5)]
    store.mark_running(uuids[3], 9.0)
    store.mark_running(uuids[1], 9.0)
    assert [r.uuid for r in store.tasks_with_status(RUNNING)] == [uuids[1], uuids[3]]
    assert [r.uuid for r in store.tasks_with_status(QUEUED, RUNNING)] == uuids
    assert store.tasks_with_status(SUCCESS) == []


def test_transitions_are_guarded(store):
    uuid = add(store)
    store.set_progress(uuid, 30)  # not running: ignored
    store.requeue(uuid, uncount_attempt=True)  # not running: ignored
    assert (store.get_task(uuid).progress, store.get_task(uuid).attempts) == (0, 0)

    assert store.mark_running(uuid, 5.0) and not store.mark_running(uuid, 6.0)
    store.set_progress(uuid, 40)
    record = store.get_task(uuid)
    assert (record.status, record.attempts, record.started_at, record.progress) == (RUNNING, 1, 5.0, 40)

    store.requeue(uuid, uncount_attempt=False)  # restart recovery: the attempt stays counted
    record = store.get_task(uuid)
    assert (record.status, record.attempts, record.started_at, record.progress) == (QUEUED, 1, None, 0)
    store.mark_running(uuid, 7.0)
    store.requeue(uuid, uncount_attempt=True)  # stopped by shutdown: not counted
    assert (store.get_task(uuid).status, store.get_task(uuid).attempts) == (QUEUED, 1)

    assert not store.finish(uuid, SUCCESS, now=8.0, expires_at=9.0, from_statuses=(RUNNING,))
    assert store.get_task(uuid).status == QUEUED
    assert store.finish(uuid, ERROR, now=8.0, expires_at=9.0, error={"code": "urlUnreachable", "message": "x",
                                                                     "parameter": "inputs.audio"})
    record = store.get_task(uuid)
    assert (record.status, record.error, record.finished_at, record.expires_at, record.progress) == (
        ERROR, {"code": "urlUnreachable", "message": "x", "parameter": "inputs.audio"}, 8.0, 9.0, 0)
    for status in (SUCCESS, CANCELLED, ERROR):  # terminal is terminal
        assert not store.finish(uuid, status, now=10.0, expires_at=11.0)
    assert not store.mark_running(uuid, 10.0)
    assert store.get_task(uuid).finished_at == 8.0


def test_set_input_merges_urls(store):
    uuid = add(store)
    store.set_input(uuid, "https://example.com/a.wav", "m-a")
    store.set_input(uuid, "https://example.com/b.wav?x=1&y='2'", "m-b")
    store.set_input(new_uuid(), "https://example.com/c.wav", "m-c")  # unknown task: nothing happens
    assert store.get_task(uuid).inputs == {"https://example.com/a.wav": "m-a",
                                           "https://example.com/b.wav?x=1&y='2'": "m-b"}


def test_only_one_of_many_racing_starts_wins(store):
    uuid = add(store)
    barrier = threading.Barrier(6)
    wins = []

    def start():
        barrier.wait()
        wins.append(store.mark_running(uuid, 2.0))

    threads = [threading.Thread(target=start) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(wins) == [False] * 5 + [True] and store.get_task(uuid).attempts == 1


def test_store_is_safe_across_threads(store):
    uuids = [new_uuid() for _ in range(40)]

    def work(chunk):
        for u in chunk:
            add(store, u)
            store.mark_running(u, 2.0)

    threads = [threading.Thread(target=work, args=(uuids[i::4],)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(r.uuid for r in store.tasks_with_status(RUNNING)) == sorted(uuids)


# -- finish: results, media, deliveries ----------------------------------------------------------------

def test_finish_writes_results_media_and_deliveries_in_one_step(store):
    uuid = add(store)
    store.mark_running(uuid, 2.0)
    results = [new_result(i) for i in range(3)]
    deliveries = [NewDelivery("upload", "https://example.com/put", r.idx) for r in results]
    deliveries.append(NewDelivery("webhook", "https://example.com/hook", None))
    assert not store.finish(uuid, SUCCESS, now=3.0, expires_at=400.0, results=results, owner="alice",
                            deliveries=deliveries, from_statuses=(QUEUED,))
    assert store.results(uuid) == [] and store.deliveries(uuid) == []
    assert all(store.get_media(r.audio_uuid) is None for r in results)  # nothing written when refused

    store.set_progress(uuid, 60)
    assert store.finish(uuid, SUCCESS, now=3.0, expires_at=400.0, results=results, owner="alice",
                        deliveries=deliveries, from_statuses=(RUNNING,))
    record = store.get_task(uuid)
    assert (record.status, record.progress, record.finished_at, record.expires_at, record.error) == (
        SUCCESS, 100, 3.0, 400.0, None)
    assert [(r.idx, r.audio_uuid, r.seed, r.ext, r.mime, r.size, r.gpu_seconds, r.created_at, r.expires_at)
            for r in store.results(uuid)] == [
        (r.idx, r.audio_uuid, r.seed, ".mp3", "audio/mpeg", r.size, 0.25, 3.0, 500.0) for r in results]
    stored = store.get_media(results[2].audio_uuid.upper())  # ids are found whatever their case
    assert stored == MediaRecord(id=results[2].audio_uuid, kind="result", storage_key="ab/2.mp3", ext=".mp3",
                                 mime="audio/mpeg", size=1002, owner="alice", created_at=3.0, expires_at=500.0)
    owed = store.deliveries(uuid)
    assert [(d.kind, d.url, d.result_idx, d.status, d.attempts, d.next_attempt_at, d.last_error) for d in owed] == [
        ("upload", "https://example.com/put", 0, "pending", 0, 3.0, None),
        ("upload", "https://example.com/put", 1, "pending", 0, 3.0, None),
        ("upload", "https://example.com/put", 2, "pending", 0, 3.0, None),
        ("webhook", "https://example.com/hook", None, "pending", 0, 3.0, None)]
    assert [d.id for d in owed] == sorted(d.id for d in owed)


def test_outbox_counts_tries_and_settles(store):
    one, two = add(store), add(store)
    for uuid in (one, two):
        store.finish(uuid, ERROR, now=5.0, expires_at=50.0, error={"code": "inferenceError", "message": "m"},
                     deliveries=[NewDelivery("webhook", f"https://example.com/{uuid}", None)])
    assert [d.task_uuid for d in store.pending_deliveries()] == [one, two]
    first = store.deliveries(one)[0]
    store.delivery_attempted(first.id, now=6.0, error="urlTimeout: slow")
    store.delivery_attempted(first.id, now=7.0, error=None)  # a success keeps the last error for the record
    store.delivery_settled(first.id, "done", now=7.0)
    first = store.deliveries(one)[0]
    assert (first.status, first.attempts, first.last_error) == ("done", 2, "urlTimeout: slow")
    second = store.deliveries(two)[0]
    store.delivery_settled(second.id, "failed", now=8.0, error="result unavailable: gone")
    assert store.deliveries(two)[0].last_error == "result unavailable: gone"
    assert store.pending_deliveries() == []


# -- media and expiry ----------------------------------------------------------------------------------

def test_media_rows(store):
    a, b = new_uuid(), new_uuid()
    store.insert_media(media(a, expires_at=100.0))
    store.insert_media(media(b, expires_at=200.0, owner="bob"))
    assert store.get_media(a) == media(a, expires_at=100.0)
    assert store.get_media(b.upper()).owner == "bob"
    assert [m.id for m in store.expired_media(99.9)] == []
    assert [m.id for m in store.expired_media(100.0)] == [a]  # due at its expiry time
    store.delete_media(a.upper())
    assert store.get_media(a) is None and store.get_media(b) is not None


def test_expired_tasks_go_with_their_results_and_deliveries(store):
    done, later, queued = add(store), add(store), add(store)
    results = [new_result(0, expires_at=150.0)]
    store.finish(done, SUCCESS, now=2.0, expires_at=100.0, results=results, owner="alice",
                 deliveries=[NewDelivery("webhook", "https://example.com/hook", 0)])
    store.finish(later, CANCELLED, now=2.0, expires_at=300.0)
    assert store.delete_expired_tasks(99.0) == 0
    assert store.delete_expired_tasks(100.0) == 1
    assert store.get_task(done) is None and store.results(done) == [] and store.deliveries(done) == []
    assert store.get_media(results[0].audio_uuid) is not None  # media rows expire on their own clock
    assert [m.id for m in store.expired_media(150.0)] == [results[0].audio_uuid]
    assert store.delete_expired_tasks(10_000.0) == 1  # `later`; the queued task never expires
    assert [r.uuid for r in store.tasks_with_status(QUEUED)] == [queued]


# -- schema -------------------------------------------------------------------------------------------

def test_reopening_keeps_everything_and_a_newer_schema_is_refused(backend):
    first = backend.open()
    uuid = add(first)
    first.insert_media(media(new_uuid()))
    first.close()
    again = backend.open()  # the schema is created once and read back
    assert again.writable() and again.get_task(uuid).status == QUEUED
    again.close()
    backend.set_schema_version(99)
    with pytest.raises(StoreError, match="schema version 99"):
        backend.open()


# -- leases (LeasingStore) ------------------------------------------------------------------------------

def oldest(limit: int = 1):
    """A picker: the `limit` oldest candidates (the real one lives in the job layer)."""
    return lambda candidates, last_key: candidates[:limit]


def test_claim_marks_a_batch_running_under_a_lease(leasing):
    uuids = [add(leasing, key=k, now=float(i)) for i, k in enumerate(["alice", "alice", "bob", "carol"])]
    add(leasing, model="turbo")
    seen_last_keys = []

    def pick(candidates, last_key):
        seen_last_keys.append(last_key)
        assert all(c.model == "xl-sft" and c.status == QUEUED for c in candidates)
        return [c for c in candidates if c.key_id != last_key][:2]

    claims = leasing.claim_batch("xl-sft", worker="w1", now=100.0, lease_seconds=30.0, pick=pick)
    assert [c.record.uuid for c in claims] == uuids[:2]
    for claim in claims:
        assert (claim.record.status, claim.record.attempts, claim.record.started_at) == (RUNNING, 1, 100.0)
        assert (claim.lease.uuid, claim.lease.worker, claim.lease.expires_at) == (claim.record.uuid, "w1", 130.0)
        assert leasing.get_task(claim.record.uuid).status == RUNNING
    assert claims[0].lease.token != claims[1].lease.token
    second = leasing.claim_batch("xl-sft", worker="w2", now=101.0, lease_seconds=30.0, pick=pick)
    assert [c.record.uuid for c in second] == uuids[2:] and seen_last_keys == [None, "alice"]
    assert leasing.claim_batch("xl-sft", worker="w2", now=102.0, lease_seconds=30.0, pick=pick) == []
    assert leasing.claim_batch("xl-sft", worker="w2", now=102.0, lease_seconds=30.0,
                               pick=lambda c, k: [TaskRecord(**{**vars(c[0]), "uuid": new_uuid()})] if c else []) == []


def test_concurrent_claims_skip_locked_rows_instead_of_waiting(leasing, leasing_backend):
    import psycopg

    uuids = [add(leasing, now=float(i)) for i in range(5)]
    with psycopg.connect(leasing_backend.url) as other:  # another claimer, mid-transaction
        other.execute("SELECT uuid FROM tasks WHERE uuid = ANY(%s) FOR UPDATE", (uuids[:2],))
        got: list = []
        claimer = threading.Thread(target=lambda: got.extend(
            leasing.claim_batch("xl-sft", worker="w2", now=5.0, lease_seconds=30.0, pick=oldest(2))))
        claimer.start()
        claimer.join(60)
        blocked = claimer.is_alive()
        other.rollback()
    claimer.join()
    assert not blocked, "claim_batch waited for a row another transaction held"
    assert [c.record.uuid for c in got] == uuids[2:4]
    assert [r.uuid for r in leasing.tasks_with_status(QUEUED)] == uuids[:2] + uuids[4:]


def test_two_workers_never_claim_the_same_task(leasing_backend):
    one, two = leasing_backend.open(), leasing_backend.open()  # separate pools: separate connections
    uuids = {add(one, key=f"key{i % 3}", now=float(i)) for i in range(120)}
    barrier = threading.Barrier(2)
    claimed: dict[str, list[str]] = {"w1": [], "w2": []}

    def work(store, worker):
        barrier.wait()
        while batch := store.claim_batch("xl-sft", worker=worker, now=10.0, lease_seconds=60.0, pick=oldest(3)):
            claimed[worker] += [c.record.uuid for c in batch]

    threads = [threading.Thread(target=work, args=(s, w)) for s, w in ((one, "w1"), (two, "w2"))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    everything = claimed["w1"] + claimed["w2"]
    assert len(everything) == len(set(everything)) == 120 and set(everything) == uuids
    assert all(one.get_task(u).attempts == 1 for u in everything)
    one.close()
    two.close()


def test_progress_renews_the_lease_until_the_task_is_cancelled(leasing):
    uuid = add(leasing)
    (claim,) = leasing.claim_batch("xl-sft", worker="w1", now=100.0, lease_seconds=30.0, pick=oldest())
    renewed = leasing.renew_lease(claim.lease, now=125.0, lease_seconds=30.0, progress=40)
    assert renewed == Lease(uuid, "w1", claim.lease.token, 155.0) and leasing.get_task(uuid).progress == 40
    outcome = leasing.sweep_leases(140.0, max_attempts=2, error=INTERRUPTED, expires_at=999.0,
                                   deliveries_for=lambda r: ())
    assert outcome.ran and outcome.requeued == () and leasing.get_task(uuid).status == RUNNING  # renewed in time
    assert leasing.finish(uuid, CANCELLED, now=141.0, expires_at=999.0)  # the client's cancel is not fenced
    assert leasing.renew_lease(renewed, now=142.0, lease_seconds=30.0, progress=50) is None  # the worker stops
    assert leasing.get_task(uuid).progress == 40


def test_expired_leases_are_requeued_counting_the_attempt_then_interrupted(leasing):
    uuid = add(leasing)
    webhook = [NewDelivery("webhook", "https://example.com/hook", None)]

    def sweep(now):
        return leasing.sweep_leases(now, max_attempts=2, error=INTERRUPTED, expires_at=now + 600,
                                    deliveries_for=lambda record: webhook if record.uuid == uuid else ())

    leasing.claim_batch("xl-sft", worker="w1", now=100.0, lease_seconds=30.0, pick=oldest())
    assert sweep(130.0).requeued == ()  # lapses only after its expiry
    assert sweep(131.0).requeued == (uuid,)
    record = leasing.get_task(uuid)
    assert (record.status, record.attempts, record.progress, record.started_at) == (QUEUED, 1, 0, None)

    (retry,) = leasing.claim_batch("xl-sft", worker="w2", now=200.0, lease_seconds=30.0, pick=oldest())
    assert retry.record.attempts == 2
    outcome = sweep(300.0)
    assert (outcome.requeued, outcome.interrupted) == ((), (uuid,))
    record = leasing.get_task(uuid)
    assert (record.status, record.error, record.finished_at, record.expires_at) == (ERROR, INTERRUPTED, 300.0, 900.0)
    assert [(d.kind, d.result_idx) for d in leasing.deliveries(uuid)] == [("webhook", None)]
    assert sweep(10_000.0) == type(outcome)(ran=True)  # nothing left to sweep


def test_one_sweeper_at_a_time(leasing, leasing_backend):
    import psycopg

    from cantata.jobs.pg_store import SWEEPER_LOCK

    uuid = add(leasing)
    leasing.claim_batch("xl-sft", worker="w1", now=100.0, lease_seconds=30.0, pick=oldest())
    with psycopg.connect(leasing_backend.url, autocommit=True) as other:  # another node's sweeper
        other.execute("SELECT pg_advisory_lock(%s)", (SWEEPER_LOCK,))
        busy = leasing.sweep_leases(500.0, max_attempts=2, error=INTERRUPTED, expires_at=999.0,
                                    deliveries_for=lambda r: ())
        other.execute("SELECT pg_advisory_unlock(%s)", (SWEEPER_LOCK,))
    assert not busy.ran and leasing.get_task(uuid).status == RUNNING
    assert leasing.sweep_leases(500.0, max_attempts=2, error=INTERRUPTED, expires_at=999.0,
                                deliveries_for=lambda r: ()).requeued == (uuid,)


def test_a_worker_frozen_past_its_lease_cannot_overwrite_the_retry(leasing):
    uuid = add(leasing)
    (frozen,) = leasing.claim_batch("xl-sft", worker="w1", now=100.0, lease_seconds=30.0, pick=oldest())
    leasing.sweep_leases(200.0, max_attempts=3, error=INTERRUPTED, expires_at=999.0, deliveries_for=lambda r: ())
    (retry,) = leasing.claim_batch("xl-sft", worker="w2", now=201.0, lease_seconds=30.0, pick=oldest())
    stale = [new_result(0)]
    assert leasing.renew_lease(frozen.lease, now=202.0, lease_seconds=30.0, progress=90) is None
    assert not leasing.finish(uuid, SUCCESS, now=203.0, expires_at=999.0, results=stale, owner="alice",
                              from_statuses=(RUNNING,), lease=frozen.lease)
    leasing.requeue(uuid, uncount_attempt=True, lease=frozen.lease)  # nor put it back in the queue
    assert leasing.get_task(uuid).status == RUNNING and leasing.results(uuid) == []
    assert leasing.get_media(stale[0].audio_uuid) is None

    fresh = [new_result(0)]
    assert leasing.finish(uuid, SUCCESS, now=210.0, expires_at=999.0, results=fresh, owner="alice",
                          from_statuses=(RUNNING,), lease=retry.lease)
    assert [r.audio_uuid for r in leasing.results(uuid)] == [fresh[0].audio_uuid]
    assert not leasing.finish(uuid, SUCCESS, now=211.0, expires_at=999.0, results=stale, owner="alice",
                              from_statuses=(RUNNING,), lease=frozen.lease)
    assert [r.audio_uuid for r in leasing.results(uuid)] == [fresh[0].audio_uuid]


def test_a_shutdown_gives_its_own_claim_back_uncounted(leasing):
    uuid = add(leasing)
    (claim,) = leasing.claim_batch("xl-sft", worker="w1", now=100.0, lease_seconds=30.0, pick=oldest())
    leasing.requeue(uuid, uncount_attempt=True, lease=claim.lease)
    record = leasing.get_task(uuid)
    assert (record.status, record.attempts) == (QUEUED, 0)
    assert leasing.sweep_leases(10_000.0, max_attempts=1, error=INTERRUPTED, expires_at=0.0,
                                deliveries_for=lambda r: ()).requeued == ()  # no lease left to lapse


def test_postgres_store_is_not_writable_once_its_database_is_gone(postgres_server, postgres_url):
    store = _postgres_store_class()(postgres_url)
    assert store.writable()
    postgres_server.admin(f"DROP DATABASE {postgres_url.rsplit('/', 1)[1]} WITH (FORCE)")
    assert not store.writable()  # the readiness probe answers (false) instead of raising
    store.close()


def test_postgres_migrates_an_older_schema_in_place(postgres_url):
    import psycopg

    from cantata.jobs.pg_store import MIGRATIONS, SCHEMA_VERSION

    with psycopg.connect(postgres_url, autocommit=True) as conn:  # a database a version-1 Cantata wrote
        conn.execute(MIGRATIONS[0])
        conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
        conn.execute("INSERT INTO tasks (uuid, key_id, model, status, task_json, request_json, created_at)"
                     " VALUES ('old-task', 'alice', 'xl-sft', 'queued', '{}', '{}', 1.0)")
    store = _postgres_store_class()(postgres_url)
    (claim,) = store.claim_batch("xl-sft", worker="w1", now=2.0, lease_seconds=30.0, pick=oldest())
    assert claim.record.uuid == "old-task" and claim.record.attempts == 1
    store.close()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)
