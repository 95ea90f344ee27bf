"""One conformance suite for the store contract (`cantata.jobs.store_contract`), run unchanged
against every backend: SQLite (a file per test) and PostgreSQL (a real server, a database per
test; see pgserver.py). Both implement `LeasingStore`, so the lease tests run against both too;
the few tests of one backend's own mechanism (PostgreSQL's row locks and advisory lock) say so.

The store treats task and request JSON as opaque text, so the tasks here are bare rows (a real
task only where a record decodes it)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from cantata.jobs.store import Store
from cantata.jobs.store_contract import (CANCELLED, ERROR, QUEUED, RUNNING, SUCCESS, DuplicateTask, JobStore, Lease,
                                         LeasingStore, MediaRecord, NewDelivery, NewResult, StoreError, SweepOutcome,
                                         TaskRecord)
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


@pytest.fixture(params=["sqlite", "postgresql"])
def leasing_backend(request, tmp_path) -> Backend:
    """The backends that implement `LeasingStore`: both."""
    if request.param == "sqlite":
        return _sqlite_backend(tmp_path)
    return _postgres_backend(request.getfixturevalue("postgres_url"))


@pytest.fixture
def postgres_backend(postgres_url) -> Backend:
    """For the tests of PostgreSQL's own locking (row locks, the sweeper's advisory lock)."""
    return _postgres_backend(postgres_url)


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


@pytest.mark.parametrize("implementation,protocol", [("sqlite", LeasingStore), ("postgresql", LeasingStore)])
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


def test_a_websocket_sessions_tasks_are_listed_for_its_key_only(store):
    sent = [new_uuid(), new_uuid()]
    for uuid in sent:
        store.insert_task(uuid=uuid, key_id="alice", model="xl-sft", task_json="{}", request_json="{}", inputs={},
                          now=1.0, ws_session="session-1")
    store.insert_task(uuid=new_uuid(), key_id="alice", model="xl-sft", task_json="{}", request_json="{}", inputs={},
                      now=1.0, ws_session="session-2")
    add(store)  # sent over HTTP: no session
    assert [r.uuid for r in store.tasks_of_ws_session("alice", "session-1")] == sent
    assert store.tasks_of_ws_session("bob", "session-1") == []  # another key resuming it sees nothing
    assert store.tasks_of_ws_session("alice", "session-9") == []


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


def test_a_record_decodes_its_task_and_request_once(store, monkeypatch):
    from cantata.api.validation import validate_audio_inference
    from cantata.jobs.task import AudioInferenceTask
    from serverkit import task

    validated = validate_audio_inference(task(numberResults=2, seed=7))
    request = {"taskType": "audioInference", "taskUUID": validated.task_uuid, "numberResults": 2}
    store.insert_task(uuid=validated.task_uuid, key_id="alice", model="xl-sft", task_json=validated.to_json(),
                      request_json=json.dumps(request), inputs={}, now=1.0)
    decode = AudioInferenceTask.from_json
    decoded: list[str] = []
    monkeypatch.setattr(AudioInferenceTask, "from_json", lambda text: decoded.append(text) or decode(text))

    record = store.get_task(validated.task_uuid)
    assert record.task == validated and record.task is record.task and len(decoded) == 1
    assert record.request == request and record.request is record.request
    assert record.task_json == validated.to_json()  # the stored text is still there
    again = store.get_task(validated.task_uuid)
    assert again == record and len(decoded) == 1  # equality compares the stored fields, decodes nothing
    assert again.task == validated and len(decoded) == 2  # each record decodes its own, once
    assert dataclasses.replace(record, task_json=json.dumps({**json.loads(record.task_json), "seed": 8})).task.seed == 8


# -- the queue ------------------------------------------------------------------------------------------

def test_queue_depth_and_each_tasks_place_in_its_models_queue(store):
    x1, x2, t1, x3, t2 = (add(store, model=m, now=float(i)) for i, m in
                          enumerate(["xl-sft", "xl-sft", "turbo", "xl-sft", "turbo"]))
    assert (store.queue_depth(), store.queue_depth("xl-sft"), store.queue_depth("turbo"),
            store.queue_depth("base")) == (5, 3, 2, 0)
    assert [store.queued_ahead(u) for u in (x1, x2, x3, t1, t2)] == [0, 1, 2, 0, 1]

    store.mark_running(x1, 6.0)
    store.finish(t1, CANCELLED, now=6.0, expires_at=99.0)
    assert (store.queue_depth(), store.queue_depth("xl-sft"), store.queue_depth("turbo")) == (3, 2, 1)
    assert [store.queued_ahead(u) for u in (x1, t1, new_uuid())] == [None, None, None]  # running, done, unknown
    assert [store.queued_ahead(u) for u in (x2, x3, t2)] == [0, 1, 0]

    store.requeue(x1, uncount_attempt=True)  # back in the queue at its submission place
    assert [store.queued_ahead(u) for u in (x1, x2, x3)] == [0, 1, 2] and store.queue_depth("xl-sft") == 3


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


# -- outbox claims (several delivery nodes) ---------------------------------------------------------

def _finished_with(store: JobStore, *kinds: tuple[str, int | None], now: float) -> tuple[str, list[int]]:
    """A task finished at `now` owing one delivery per (kind, result index); its outbox ids."""
    uuid = add(store)
    store.finish(uuid, SUCCESS, now=now, expires_at=10_000.0,
                 deliveries=[NewDelivery(kind, f"https://example.com/{kind}", idx) for kind, idx in kinds])
    return uuid, [d.id for d in store.deliveries(uuid)]


def _claimed(deliveries) -> list[tuple[int, float, int, str]]:
    return [(d.id, d.next_attempt_at, d.attempts, d.status) for d in deliveries]


def test_outbox_claims_hand_out_each_tasks_due_head_row_and_hold_it(store):
    _, (a_up0, a_up1, a_hook) = _finished_with(store, ("upload", 0), ("upload", 1), ("webhook", None), now=5.0)
    _, (b_hook,) = _finished_with(store, ("webhook", None), now=6.0)
    _, (c_hook,) = _finished_with(store, ("webhook", None), now=20.0)

    assert _claimed(store.claim_deliveries(now=10.0, hold_seconds=30.0)) == [
        (a_up0, 40.0, 0, "pending"), (b_hook, 40.0, 0, "pending")]  # c is not due; a's later rows wait
    assert store.claim_deliveries(now=11.0, hold_seconds=30.0) == []  # held; a_up1 waits behind a_up0

    store.delivery_settled(a_up0, "done", now=12.0)
    assert _claimed(store.claim_deliveries(now=12.0, hold_seconds=30.0)) == [(a_up1, 42.0, 0, "pending")]
    store.delivery_attempted(b_hook, now=13.0, error="urlTimeout: slow", retry_at=60.0)  # the stored schedule
    assert [(d.id, d.attempts, d.next_attempt_at, d.last_error) for d in store.pending_deliveries()
            if d.id == b_hook] == [(b_hook, 1, 60.0, "urlTimeout: slow")]

    assert _claimed(store.claim_deliveries(now=41.0, hold_seconds=30.0)) == [(c_hook, 71.0, 0, "pending")]
    store.delivery_attempted(c_hook, now=42.0, error=None)  # no retry_at: the due time stays
    assert [d.next_attempt_at for d in store.pending_deliveries() if d.id == c_hook] == [71.0]
    # a_up1's claimer never reported back: its hold lapsed, so it is handed out again (at least once)
    assert _claimed(store.claim_deliveries(now=60.0, hold_seconds=5.0)) == [
        (a_up1, 65.0, 0, "pending"), (b_hook, 65.0, 1, "pending")]
    store.delivery_settled(a_up1, "failed", now=61.0, error="urlUnreachable: gone")
    assert _claimed(store.claim_deliveries(now=100.0, hold_seconds=5.0, limit=2)) == [
        (a_hook, 105.0, 0, "pending"), (b_hook, 105.0, 1, "pending")]  # oldest first, at most `limit`
    assert _claimed(store.claim_deliveries(now=100.0, hold_seconds=5.0, limit=2)) == [(c_hook, 105.0, 1, "pending")]


def test_concurrent_outbox_claimers_never_get_the_same_row(backend):
    stores = [backend.open() for _ in range(4)]  # separate connections, as separate nodes would have
    heads, seconds = [], []
    for i in range(30):
        kinds = [("upload", 0), ("webhook", None)] if i % 3 == 0 else [("webhook", None)]
        _, ids = _finished_with(stores[0], *kinds, now=1.0)
        heads.append(ids[0])
        seconds += ids[1:]
    barrier = threading.Barrier(len(stores))
    claimed: list[list[int]] = [[] for _ in stores]

    def claim(index: int) -> None:
        barrier.wait()
        while batch := stores[index].claim_deliveries(now=10.0, hold_seconds=1000.0, limit=2):
            claimed[index] += [d.id for d in batch]

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    everything = [d for ids in claimed for d in ids]
    assert sorted(everything) == sorted(heads)  # each head exactly once; no row behind a held head
    assert all(d.next_attempt_at == 1010.0 for d in stores[0].pending_deliveries() if d.id in heads)
    for opened in stores:
        opened.close()


def test_postgres_outbox_claims_skip_rows_another_node_holds(postgres_backend):
    import psycopg

    store = postgres_backend.open()
    ids = [_finished_with(store, ("webhook", None), now=1.0)[1][0] for _ in range(4)]
    with psycopg.connect(postgres_backend.url) as other:  # another node, mid-claim
        other.execute("SELECT id FROM outbox WHERE id = ANY(%s) FOR UPDATE", (ids[:2],))
        got: list = []
        claimer = threading.Thread(target=lambda: got.extend(store.claim_deliveries(now=5.0, hold_seconds=30.0)))
        claimer.start()
        claimer.join(60)
        blocked = claimer.is_alive()
        other.rollback()
    claimer.join()
    assert not blocked, "claim_deliveries waited for a row another transaction held"
    assert _claimed(got) == [(ids[2], 35.0, 0, "pending"), (ids[3], 35.0, 0, "pending")]
    assert _claimed(store.claim_deliveries(now=5.0, hold_seconds=30.0)) == [(ids[0], 35.0, 0, "pending"),
                                                                           (ids[1], 35.0, 0, "pending")]
    store.close()


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
                               pick=lambda c, k: [dataclasses.replace(c[0], uuid=new_uuid())] if c else []) == []


def test_postgres_concurrent_claims_skip_locked_rows_instead_of_waiting(postgres_backend):
    import psycopg

    leasing = postgres_backend.open()
    uuids = [add(leasing, now=float(i)) for i in range(5)]
    with psycopg.connect(postgres_backend.url) as other:  # another claimer, mid-transaction
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
    leasing.close()


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


def test_postgres_runs_one_sweeper_at_a_time(postgres_backend):
    import psycopg

    from cantata.jobs.pg_store import SWEEPER_LOCK

    leasing = postgres_backend.open()
    uuid = add(leasing)
    leasing.claim_batch("xl-sft", worker="w1", now=100.0, lease_seconds=30.0, pick=oldest())
    with psycopg.connect(postgres_backend.url, autocommit=True) as other:  # another node's sweeper
        other.execute("SELECT pg_advisory_lock(%s)", (SWEEPER_LOCK,))
        busy = leasing.sweep_leases(500.0, max_attempts=2, error=INTERRUPTED, expires_at=999.0,
                                    deliveries_for=lambda r: ())
        other.execute("SELECT pg_advisory_unlock(%s)", (SWEEPER_LOCK,))
    assert not busy.ran and leasing.get_task(uuid).status == RUNNING
    assert leasing.sweep_leases(500.0, max_attempts=2, error=INTERRUPTED, expires_at=999.0,
                                deliveries_for=lambda r: ()).requeued == (uuid,)
    leasing.close()


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


def test_lease_tokens_are_never_reused(leasing_backend):
    first = leasing_backend.open()
    uuid = add(first)
    (one,) = first.claim_batch("xl-sft", worker="w1", now=100.0, lease_seconds=30.0, pick=oldest())
    first.sweep_leases(200.0, max_attempts=5, error=INTERRUPTED, expires_at=999.0, deliveries_for=lambda r: ())
    (two,) = first.claim_batch("xl-sft", worker="w1", now=201.0, lease_seconds=30.0, pick=oldest())  # same pair
    assert first.finish(uuid, SUCCESS, now=202.0, expires_at=203.0, from_statuses=(RUNNING,), lease=two.lease)
    assert first.delete_task(uuid)
    first.close()
    again = leasing_backend.open()  # a restart, the task gone: the counter still only grows
    add(again, uuid)
    (three,) = again.claim_batch("xl-sft", worker="w1", now=300.0, lease_seconds=30.0, pick=oldest())
    tokens = [one.lease.token, two.lease.token, three.lease.token]
    assert len(set(tokens)) == 3
    for stale in (one.lease, two.lease):  # so an old claim of the same task by the same worker stays fenced
        assert again.renew_lease(stale, now=301.0, lease_seconds=30.0) is None
        assert not again.finish(uuid, SUCCESS, now=302.0, expires_at=999.0, from_statuses=(RUNNING,), lease=stale)
    assert again.renew_lease(three.lease, now=301.0, lease_seconds=30.0) == dataclasses.replace(three.lease,
                                                                                              expires_at=331.0)
    again.close()


def test_key_turns_are_shared_by_every_worker(leasing_backend):
    one, two = leasing_backend.open(), leasing_backend.open()
    for i, key in enumerate(["alice", "alice", "bob", "alice"]):
        add(one, key=key, now=float(i))
    add(one, key="carol", model="turbo")
    turns: list[str | None] = []

    def fair(candidates, last_key):
        turns.append(last_key)
        return [next((c for c in candidates if c.key_id != last_key), candidates[0])]

    heads = [store.claim_batch("xl-sft", worker=name, now=10.0, lease_seconds=30.0, pick=fair)[0].record.key_id
             for store, name in ((one, "w1"), (two, "w2"), (one, "w1"), (two, "w2"))]
    assert heads == ["alice", "bob", "alice", "alice"] and turns == [None, "alice", "bob", "alice"]
    (turbo,) = two.claim_batch("turbo", worker="w2", now=10.0, lease_seconds=30.0, pick=fair)
    assert turbo.record.key_id == "carol" and turns[-1] is None  # each model keeps its own turn
    one.close()
    two.close()


def test_concurrent_sweepers_act_on_each_lapsed_lease_once(leasing_backend):
    stores = [leasing_backend.open() for _ in range(3)]
    uuids = [add(stores[0], now=float(i)) for i in range(12)]
    stores[0].claim_batch("xl-sft", worker="w1", now=100.0, lease_seconds=30.0, pick=oldest(12))
    webhook = [NewDelivery("webhook", "https://example.com/hook", None)]
    barrier = threading.Barrier(len(stores))
    outcomes = []

    def sweep(store):
        barrier.wait()
        outcomes.append(store.sweep_leases(500.0, max_attempts=1, error=INTERRUPTED, expires_at=900.0,
                                           deliveries_for=lambda record: webhook))

    threads = [threading.Thread(target=sweep, args=(s,)) for s in stores]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    interrupted = [u for outcome in outcomes for u in outcome.interrupted]
    assert sorted(interrupted) == sorted(uuids) and all(o.requeued == () for o in outcomes)
    for uuid in uuids:  # failed once: one error, one webhook owed
        assert (stores[0].get_task(uuid).status, stores[0].get_task(uuid).error) == (ERROR, INTERRUPTED)
        assert [(d.kind, d.result_idx) for d in stores[0].deliveries(uuid)] == [("webhook", None)]
    for opened in stores:
        opened.close()


def test_a_task_started_without_a_lease_is_never_swept(leasing):
    uuid = add(leasing)
    assert leasing.mark_running(uuid, 1.0)  # the single-process path: restart recovery requeues it
    assert leasing.sweep_leases(10_000.0, max_attempts=1, error=INTERRUPTED, expires_at=0.0,
                                deliveries_for=lambda r: ()) == SweepOutcome(ran=True)
    assert leasing.get_task(uuid).status == RUNNING


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
