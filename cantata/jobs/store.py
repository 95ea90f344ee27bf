"""The embedded job store: one SQLite file holds tasks, their results, media records and the
delivery outbox, so a restart (or a crash) loses no accepted task, no finished result and no
webhook or upload still owed to a client. It implements the whole store contract
(`cantata.jobs.store_contract.LeasingStore`), so the worker processes of
`cantata serve --devices cuda:0,cuda:1` share one file the way nodes share PostgreSQL.

SQLite in WAL mode lets readers run while one writer commits. Each thread gets its own
connection; every write is one `BEGIN IMMEDIATE` transaction, which takes the database's write
lock up front (a transaction that started as a reader and upgraded could fail with SQLITE_BUSY
instead of waiting). Threads sharing one `Store` also queue on its lock; other connections
(other processes) wait on SQLite's busy timeout (`BUSY_TIMEOUT_SECONDS`), so writers wait their
turn instead of failing (the one lock SQLite will not wait for, a fresh file's switch to WAL, is
retried by `_enter_wal`). A transition that must be atomic (results + outbox rows + task status)
is one transaction.

Claims, sweeps and outbox claims are one immediate transaction each, so they are serialized
across every process on the file: two claimers never take the same row, the fairness cursor
(`claim_cursor`) is exact rather than approximate, and two sweepers never both act on a lease
(the second one waits, then finds nothing left to do). Fencing tokens come from a counter row
(`lease_counter`) that only grows, in the claim's own transaction, so no token is ever reused.

Times are Unix seconds (float). The schema carries a version (`meta.schema_version`): a new file
gets `VERSION_1_SCHEMA` and then every upgrade, an older one the upgrades it lacks, all in one
transaction; a database written by a newer Cantata is refused instead of being misread.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from .task import AudioInferenceTask

SCHEMA_VERSION = 4
#: How long a connection waits for another process's write transaction before giving up with
#: SQLITE_BUSY (`sqlite3.connect(timeout=)` is SQLite's busy_timeout). Transactions here last
#: milliseconds, so only a wedged process makes anyone wait this long.
BUSY_TIMEOUT_SECONDS = 30.0


def _enter_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode (a no-op once it is), retrying SQLITE_BUSY until the busy timeout.

    Why a loop of our own: switching a fresh file to WAL reads the header under a shared lock and
    then needs the exclusive lock. When several processes open a new file at once, each holds a
    shared lock and wants to upgrade; SQLite's deadlock rule answers SQLITE_BUSY at once instead
    of calling the busy handler (CI caught one of four processes failing so). The failed
    statement drops its lock, so a short randomized wait lets one of them through.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.05))


#: The schema a version-1 Cantata created; newer versions are reached through `UPGRADES`.
VERSION_1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,   -- submission order
    uuid         TEXT NOT NULL UNIQUE,
    key_id       TEXT NOT NULL,                       -- API key that owns the task
    model        TEXT NOT NULL,                       -- variant name
    status       TEXT NOT NULL CHECK (status IN ('queued','running','success','error','cancelled')),
    attempts     INTEGER NOT NULL DEFAULT 0,          -- times a worker started it
    progress     INTEGER NOT NULL DEFAULT 0,          -- 0..100
    task_json    TEXT NOT NULL,                       -- AudioInferenceTask.to_json()
    request_json TEXT NOT NULL,                       -- the request as sent (inline audio replaced)
    inputs_json  TEXT NOT NULL DEFAULT '{}',          -- input URL -> media id once downloaded
    error_json   TEXT,                                -- {code, message, parameter?}
    created_at   REAL NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    expires_at   REAL                                 -- set when finished
);
CREATE INDEX tasks_by_status ON tasks (status, seq);
CREATE INDEX tasks_by_expiry ON tasks (expires_at);
CREATE TABLE results (
    task_uuid   TEXT NOT NULL REFERENCES tasks (uuid) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,                     -- stable order 0..n-1
    audio_uuid  TEXT NOT NULL UNIQUE,                 -- = the media id of the encoded file
    seed        INTEGER NOT NULL,
    ext         TEXT NOT NULL,
    mime        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    gpu_seconds REAL NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    PRIMARY KEY (task_uuid, idx)
);
CREATE TABLE media (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('upload','result')),
    storage_key TEXT NOT NULL,
    ext         TEXT NOT NULL,
    mime        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    owner       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE INDEX media_by_expiry ON media (expires_at);
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    task_uuid       TEXT NOT NULL REFERENCES tasks (uuid) ON DELETE CASCADE,
    kind            TEXT NOT NULL CHECK (kind IN ('upload','webhook')),
    url             TEXT NOT NULL,
    result_idx      INTEGER,                          -- NULL: the task's error
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','done','failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,                    -- due from then: a claim's hold or the retry schedule
    last_error      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE INDEX outbox_pending ON outbox (status, next_attempt_at);
INSERT INTO meta VALUES ('schema_version', '1');
"""

#: UPGRADES[v] takes a database from version v to v + 1 (statements separated by `;`).
UPGRADES: dict[int, str] = {
    1: "ALTER TABLE results ADD COLUMN planned_json TEXT",  # the planner's metadata of a result, or NULL
    2: """
    ALTER TABLE tasks ADD COLUMN claimed_by  TEXT;        -- worker id of the last claim
    ALTER TABLE tasks ADD COLUMN lease_token INTEGER;     -- fencing token of the current claim
    ALTER TABLE tasks ADD COLUMN lease_until REAL;        -- the claim lapses after this
    CREATE INDEX tasks_by_lease ON tasks (lease_until) WHERE status = 'running';
    CREATE INDEX tasks_by_model ON tasks (status, model, seq);
    CREATE INDEX outbox_by_task ON outbox (task_uuid, id);
    CREATE TABLE claim_cursor (model TEXT PRIMARY KEY, last_key TEXT NOT NULL);  -- key heading the last batch
    CREATE TABLE lease_counter (last_token INTEGER NOT NULL);                      -- one row, only grows
    INSERT INTO lease_counter VALUES (0)
    """,
    3: """
    ALTER TABLE tasks ADD COLUMN ws_session TEXT;         -- WebSocket session of a sync task sent over one
    CREATE INDEX tasks_by_ws_session ON tasks (ws_session) WHERE ws_session IS NOT NULL
    """,
}

QUEUED, RUNNING, SUCCESS, ERROR, CANCELLED = "queued", "running", "success", "error", "cancelled"
TERMINAL = (SUCCESS, ERROR, CANCELLED)

_RELEASE = "status='queued', progress=0, started_at=NULL, lease_token=NULL, lease_until=NULL"


class StoreError(RuntimeError):
    """The database cannot be used (newer schema, unwritable file)."""


class DuplicateTask(Exception):
    """A task with this taskUUID already exists."""


@dataclass(frozen=True)
class TaskRecord:
    uuid: str
    key_id: str
    model: str
    status: str
    attempts: int
    progress: int
    task_json: str
    request_json: str
    inputs: dict[str, str]
    error: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    expires_at: float | None
    seq: int

    @cached_property
    def task(self) -> AudioInferenceTask:
        """The stored task, decoded on first use and kept with this record, so a caller reading
        it several times decodes it once (`task_json` stays the stored text)."""
        return AudioInferenceTask.from_json(self.task_json)

    @cached_property
    def request(self) -> Any:
        """The request as sent (`request_json` decoded once per record). Shared by every reader
        of this record: treat it as read-only."""
        return json.loads(self.request_json)


@dataclass(frozen=True)
class ResultRecord:
    task_uuid: str
    idx: int
    audio_uuid: str
    seed: int
    ext: str
    mime: str
    size: int
    gpu_seconds: float
    created_at: float
    expires_at: float
    planned: dict[str, Any] | None = None  # the planner's metadata (`plannedMetadata`), when it ran


@dataclass(frozen=True)
class MediaRecord:
    id: str
    kind: str
    storage_key: str
    ext: str
    mime: str
    size: int
    owner: str
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class Delivery:
    id: int
    task_uuid: str
    kind: str  # upload | webhook
    url: str
    result_idx: int | None
    status: str  # pending | done | failed
    attempts: int
    next_attempt_at: float
    last_error: str | None


@dataclass(frozen=True)
class NewResult:
    """A result the worker produced, with its media file already written."""

    idx: int
    audio_uuid: str
    seed: int
    storage_key: str
    ext: str
    mime: str
    size: int
    gpu_seconds: float
    expires_at: float
    planned: dict[str, Any] | None = None


@dataclass(frozen=True)
class NewDelivery:
    kind: str
    url: str
    result_idx: int | None


@dataclass(frozen=True)
class Lease:
    """A worker's hold on one running task. `token` is unique to this claim (never reused, even
    for the same task and worker), so it fences: only the current holder's writes commit."""

    uuid: str
    worker: str
    token: int
    expires_at: float


@dataclass(frozen=True)
class Claim:
    """A task a worker claimed: its record (status running, attempt counted) and its lease."""

    record: TaskRecord
    lease: Lease


@dataclass(frozen=True)
class SweepOutcome:
    """What one sweep did. `ran` is False when another sweeper held the lock and this one did
    nothing (PostgreSQL; SQLite sweeps take turns instead)."""

    ran: bool
    requeued: tuple[str, ...] = ()
    interrupted: tuple[str, ...] = ()


#: Chooses a batch from queued candidates (oldest first) given the API key that headed the
#: previous batch of this model (None at first): the job layer's one pure batching rule (key
#: fairness, batch key, readiness, size). The store claims what it returns, head first.
Picker = Callable[[list[TaskRecord], str | None], list[TaskRecord]]


class Store:
    """`LeasingStore` on one SQLite file, shared by the threads of a process and by processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._init_schema()

    # -- connections and transactions ----------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            _enter_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _read(self, sql: str, args: Sequence = ()) -> list[sqlite3.Row]:
        return self._conn().execute(sql, args).fetchall()

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def _init_schema(self) -> None:
        with self._write() as conn:
            has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            if not has_meta:
                _run_script(conn, VERSION_1_SCHEMA)
            version = int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
            if version > SCHEMA_VERSION or any(v not in UPGRADES for v in range(version, SCHEMA_VERSION)):
                raise StoreError(f"{self.path} has schema version {version}; this Cantata reads version "
                                 f"{SCHEMA_VERSION}. Use a matching Cantata or a new data directory.")
            if version < SCHEMA_VERSION:
                for v in range(version, SCHEMA_VERSION):
                    _run_script(conn, UPGRADES[v])
                conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    def writable(self) -> bool:
        """Readiness probe: can we commit a write right now?"""
        try:
            with self._write() as conn:
                conn.execute("UPDATE meta SET value=value WHERE key='schema_version'")
            return True
        except sqlite3.Error:
            return False

    # -- tasks ---------------------------------------------------------------------------------

    def insert_task(self, *, uuid: str, key_id: str, model: str, task_json: str, request_json: str,
                    inputs: dict[str, str], now: float, ws_session: str | None = None) -> int:
        """Insert a queued task; returns its submission sequence number."""
        try:
            with self._write() as conn:
                return conn.execute(
                    "INSERT INTO tasks (uuid, key_id, model, status, task_json, request_json, inputs_json, created_at,"
                    " ws_session) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                    (uuid, key_id, model, task_json, request_json, json.dumps(inputs), now, ws_session)).lastrowid
        except sqlite3.IntegrityError:
            raise DuplicateTask(uuid) from None

    def get_task(self, uuid: str) -> TaskRecord | None:
        rows = self._read("SELECT * FROM tasks WHERE uuid=?", (uuid,))
        return _task(rows[0]) if rows else None

    def tasks_with_status(self, *statuses: str) -> list[TaskRecord]:
        marks = ",".join("?" * len(statuses))
        return [_task(r) for r in self._read(f"SELECT * FROM tasks WHERE status IN ({marks}) ORDER BY seq", statuses)]

    def tasks_of_key(self, key_id: str, *, before_seq: int | None, limit: int) -> list[TaskRecord]:
        rows = self._read("SELECT * FROM tasks WHERE key_id=? AND seq<? ORDER BY seq DESC LIMIT ?",
                          (key_id, before_seq if before_seq is not None else 2**63 - 1, limit))
        return [_task(r) for r in rows]

    def tasks_of_ws_session(self, key_id: str, ws_session: str) -> list[TaskRecord]:
        rows = self._read("SELECT * FROM tasks WHERE ws_session=? AND key_id=? ORDER BY seq", (ws_session, key_id))
        return [_task(r) for r in rows]

    def delete_task(self, uuid: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM tasks WHERE uuid=?", (uuid,)).rowcount > 0

    def queue_depth(self, model: str | None = None) -> int:
        if model is None:
            return self._read("SELECT COUNT(*) FROM tasks WHERE status='queued'")[0][0]
        return self._read("SELECT COUNT(*) FROM tasks WHERE status='queued' AND model=?", (model,))[0][0]

    def queued_ahead(self, uuid: str) -> int | None:
        rows = self._read("SELECT (SELECT COUNT(*) FROM tasks AS o WHERE o.status='queued' AND o.model=t.model"
                          " AND o.seq < t.seq) FROM tasks AS t WHERE t.uuid=? AND t.status='queued'", (uuid,))
        return rows[0][0] if rows else None

    def mark_running(self, uuid: str, now: float) -> bool:
        """queued -> running, counting an attempt; False if the task is no longer queued."""
        with self._write() as conn:
            cur = conn.execute("UPDATE tasks SET status='running', attempts=attempts+1, started_at=?, progress=0"
                               " WHERE uuid=? AND status='queued'", (now, uuid))
            return cur.rowcount == 1

    def requeue(self, uuid: str, *, uncount_attempt: bool, lease: Lease | None = None) -> None:
        """running -> queued (restart recovery, or a batch stopped by shutdown that must not count)."""
        with self._write() as conn:
            conn.execute(f"UPDATE tasks SET {_RELEASE}, attempts=attempts - ? WHERE uuid=? AND status='running'"
                         f"{_fence(lease)}", (1 if uncount_attempt else 0, uuid, *_fence_args(lease)))

    def set_progress(self, uuid: str, progress: int) -> None:
        with self._write() as conn:
            conn.execute("UPDATE tasks SET progress=? WHERE uuid=? AND status='running'", (progress, uuid))

    def set_input(self, uuid: str, url: str, media_id: str) -> None:
        """Record a downloaded input URL's media id (downloads finish after acceptance)."""
        with self._write() as conn:
            row = conn.execute("SELECT inputs_json FROM tasks WHERE uuid=?", (uuid,)).fetchone()
            if row is None:
                return
            inputs = json.loads(row[0])
            inputs[url] = media_id
            conn.execute("UPDATE tasks SET inputs_json=? WHERE uuid=?", (json.dumps(inputs), uuid))

    def finish(self, uuid: str, status: str, *, now: float, expires_at: float,
               error: dict[str, Any] | None = None, results: Sequence[NewResult] = (),
               owner: str = "", deliveries: Sequence[NewDelivery] = (),
               from_statuses: Sequence[str] = (QUEUED, RUNNING), lease: Lease | None = None) -> bool:
        """Finish a task in one transaction: its results and their media rows, the deliveries it
        owes, and its final status. False (and nothing written) if it was not in `from_statuses`
        any more, e.g. cancelled while its batch was running, or `lease` is no longer current."""
        with self._write() as conn:
            return _finish(conn, uuid, status, now=now, expires_at=expires_at, error=error, results=results,
                           owner=owner, deliveries=deliveries, from_statuses=from_statuses, lease=lease)

    def results(self, uuid: str) -> list[ResultRecord]:
        return [_result_record(dict(r)) for r in self._read("SELECT * FROM results WHERE task_uuid=? ORDER BY idx",
                                                              (uuid,))]

    # -- claims and leases -----------------------------------------------------------------------

    def claim_batch(self, model: str, *, worker: str, now: float, lease_seconds: float, pick: Picker,
                    window: int = 64) -> list[Claim]:
        """The window, the picker and the marking run in one immediate transaction: claims of
        every process on this file take turns, so none can take a row another one took."""
        with self._write() as conn:
            candidates = [_task(r) for r in conn.execute(
                "SELECT * FROM tasks WHERE status='queued' AND model=? ORDER BY seq LIMIT ?", (model, window))]
            if not candidates:
                return []
            cursor = conn.execute("SELECT last_key FROM claim_cursor WHERE model=?", (model,)).fetchone()
            offered = {c.uuid for c in candidates}
            chosen = dict.fromkeys(r.uuid for r in pick(candidates, cursor and cursor[0]) if r.uuid in offered)
            claims = []
            for uuid in chosen:
                (token,) = conn.execute("UPDATE lease_counter SET last_token=last_token+1"
                                        " RETURNING last_token").fetchone()
                (row,) = conn.execute("UPDATE tasks SET status='running', attempts=attempts+1, started_at=?,"
                                      " progress=0, claimed_by=?, lease_token=?, lease_until=? WHERE uuid=?"
                                      " RETURNING *", (now, worker, token, now + lease_seconds, uuid)).fetchall()
                claims.append(Claim(record=_task(row), lease=Lease(uuid, worker, token, now + lease_seconds)))
            if claims:
                conn.execute("INSERT INTO claim_cursor VALUES (?, ?)"
                             " ON CONFLICT (model) DO UPDATE SET last_key=excluded.last_key",
                             (model, claims[0].record.key_id))
            return claims

    def renew_lease(self, lease: Lease, *, now: float, lease_seconds: float,
                    progress: int | None = None) -> Lease | None:
        with self._write() as conn:
            renewed = conn.execute("UPDATE tasks SET lease_until=?, progress=COALESCE(?, progress)"
                                   " WHERE uuid=? AND status='running' AND lease_token=?",
                                   (now + lease_seconds, progress, lease.uuid, lease.token)).rowcount == 1
        return Lease(lease.uuid, lease.worker, lease.token, now + lease_seconds) if renewed else None

    def sweep_leases(self, now: float, *, max_attempts: int, error: dict[str, Any], expires_at: float,
                     deliveries_for: Callable[[TaskRecord], Sequence[NewDelivery]]) -> SweepOutcome:
        """One immediate transaction: sweepers in several processes run one after the other, and
        a later one finds the leases the earlier one handled already released."""
        requeued, interrupted = [], []
        with self._write() as conn:
            expired = [_task(r) for r in conn.execute(
                "SELECT * FROM tasks WHERE status='running' AND lease_until < ? ORDER BY seq", (now,))]
            for record in expired:
                if record.attempts >= max_attempts:
                    _finish(conn, record.uuid, ERROR, now=now, expires_at=expires_at, error=error,
                            deliveries=deliveries_for(record), from_statuses=(RUNNING,))
                    interrupted.append(record.uuid)
                else:
                    conn.execute(f"UPDATE tasks SET {_RELEASE} WHERE uuid=?", (record.uuid,))
                    requeued.append(record.uuid)
        return SweepOutcome(ran=True, requeued=tuple(requeued), interrupted=tuple(interrupted))

    # -- media ---------------------------------------------------------------------------------

    def insert_media(self, record: MediaRecord) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO media VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (record.id, record.kind, record.storage_key, record.ext, record.mime, record.size,
                          record.owner, record.created_at, record.expires_at))

    def get_media(self, media_id: str) -> MediaRecord | None:
        rows = self._read("SELECT * FROM media WHERE id=?", (media_id.lower(),))
        return MediaRecord(**dict(rows[0])) if rows else None

    def delete_media(self, media_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM media WHERE id=?", (media_id.lower(),))

    # -- outbox --------------------------------------------------------------------------------

    def deliveries(self, uuid: str) -> list[Delivery]:
        return [_delivery(r) for r in self._read("SELECT * FROM outbox WHERE task_uuid=? ORDER BY id", (uuid,))]

    def pending_deliveries(self) -> list[Delivery]:
        return [_delivery(r) for r in self._read("SELECT * FROM outbox WHERE status='pending' ORDER BY id")]

    def claim_deliveries(self, *, now: float, hold_seconds: float, limit: int = 32) -> list[Delivery]:
        """One immediate transaction, so claimers in every process take turns."""
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE outbox SET next_attempt_at=?, updated_at=? WHERE id IN ("
                "  SELECT id FROM outbox AS o WHERE status='pending' AND next_attempt_at <= ? AND NOT EXISTS ("
                "    SELECT 1 FROM outbox AS p WHERE p.task_uuid=o.task_uuid AND p.status='pending' AND p.id < o.id)"
                "  ORDER BY id LIMIT ?) RETURNING *", (now + hold_seconds, now, now, limit)).fetchall()
        return sorted((_delivery(r) for r in rows), key=lambda d: d.id)

    def delivery_attempted(self, delivery_id: int, *, now: float, error: str | None,
                           retry_at: float | None = None) -> None:
        """Record one try (error None: it succeeded), and when the next one is due."""
        with self._write() as conn:
            conn.execute("UPDATE outbox SET attempts=attempts+1, last_error=COALESCE(?, last_error), updated_at=?,"
                         " next_attempt_at=COALESCE(?, next_attempt_at) WHERE id=?",
                         (error, now, retry_at, delivery_id))

    def delivery_settled(self, delivery_id: int, status: str, *, now: float, error: str | None = None) -> None:
        """No more tries: 'done' or 'failed'."""
        with self._write() as conn:
            conn.execute("UPDATE outbox SET status=?, last_error=COALESCE(?, last_error), updated_at=? WHERE id=?",
                         (status, error, now, delivery_id))

    # -- expiry --------------------------------------------------------------------------------

    def expired_media(self, now: float) -> list[MediaRecord]:
        return [MediaRecord(**dict(r)) for r in self._read("SELECT * FROM media WHERE expires_at <= ?", (now,))]

    def delete_expired_tasks(self, now: float) -> int:
        """Finished tasks past their retention, with their results and outbox rows (cascade)."""
        with self._write() as conn:
            return conn.execute("DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= ?",
                                (now,)).rowcount


def _finish(conn: sqlite3.Connection, uuid: str, status: str, *, now: float, expires_at: float,
            error: dict[str, Any] | None, from_statuses: Sequence[str], results: Sequence[NewResult] = (),
            owner: str = "", deliveries: Sequence[NewDelivery] = (), lease: Lease | None = None) -> bool:
    """`finish` inside the caller's transaction (the sweeper fails tasks in its own)."""
    marks = ",".join("?" * len(from_statuses))
    cur = conn.execute(
        f"UPDATE tasks SET status=?, error_json=?, finished_at=?, expires_at=?, lease_until=NULL,"
        f" progress=CASE WHEN ?='success' THEN 100 ELSE progress END"
        f" WHERE uuid=? AND status IN ({marks}){_fence(lease)}",
        (status, json.dumps(error) if error else None, now, expires_at, status, uuid, *from_statuses,
         *_fence_args(lease)))
    if cur.rowcount != 1:
        return False
    for r in results:
        conn.execute("INSERT INTO media VALUES (?, 'result', ?, ?, ?, ?, ?, ?, ?)",
                     (r.audio_uuid, r.storage_key, r.ext, r.mime, r.size, owner, now, r.expires_at))
        conn.execute("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (uuid, r.idx, r.audio_uuid, r.seed, r.ext, r.mime, r.size, r.gpu_seconds, now,
                      r.expires_at, json.dumps(r.planned) if r.planned is not None else None))
    for d in deliveries:
        conn.execute("INSERT INTO outbox (task_uuid, kind, url, result_idx, next_attempt_at, created_at,"
                     " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (uuid, d.kind, d.url, d.result_idx, now, now, now))
    return True


def _fence(lease: Lease | None) -> str:
    """The extra WHERE clause of a write fenced by `lease` (none without one)."""
    return "" if lease is None else " AND lease_token=?"


def _fence_args(lease: Lease | None) -> tuple:
    return () if lease is None else (lease.token,)


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run `;`-separated statements inside the open transaction (`executescript` would commit)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _task(row: sqlite3.Row) -> TaskRecord:
    d = dict(row)
    return TaskRecord(
        uuid=d["uuid"], key_id=d["key_id"], model=d["model"], status=d["status"], attempts=d["attempts"],
        progress=d["progress"], task_json=d["task_json"], request_json=d["request_json"],
        inputs=json.loads(d["inputs_json"]), error=json.loads(d["error_json"]) if d["error_json"] else None,
        created_at=d["created_at"], started_at=d["started_at"], finished_at=d["finished_at"],
        expires_at=d["expires_at"], seq=d["seq"])


def _delivery(row: sqlite3.Row) -> Delivery:
    d = dict(row)
    d.pop("created_at")
    d.pop("updated_at")
    return Delivery(**d)


def _result_record(row: dict[str, Any]) -> ResultRecord:
    planned = row.pop("planned_json")
    return ResultRecord(**row, planned=json.loads(planned) if planned is not None else None)
