"""The durable job store: one SQLite file holds tasks, their results, media records and the
delivery outbox, so a restart (or a crash) loses no accepted task, no finished result and no
webhook or upload still owed to a client.

SQLite in WAL mode lets readers run while one writer commits. Each thread gets its own
connection; every write goes through one process-wide lock and an immediate transaction, so the
worker threads, the sweeper and the event loop never see SQLITE_BUSY from each other.
A transition that must be atomic (results + outbox rows + task status) is one transaction.

Times are Unix seconds (float). The schema carries a version (`meta.schema_version`); a database
written by a newer Cantata is refused instead of being misread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
#: UPGRADES[v] takes a database from version v to v + 1 (version 0 is an empty file: `_SCHEMA`).
UPGRADES: dict[int, str] = {
    1: "ALTER TABLE results ADD COLUMN planned_json TEXT",
}

QUEUED, RUNNING, SUCCESS, ERROR, CANCELLED = "queued", "running", "success", "error", "cancelled"
TERMINAL = (SUCCESS, ERROR, CANCELLED)

_SCHEMA = f"""
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
    inputs_json  TEXT NOT NULL DEFAULT '{{}}',          -- input URL -> media id once downloaded
    error_json   TEXT,                                -- {{code, message, parameter?}}
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
    planned_json TEXT,                                -- the planner's metadata for it, or NULL
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
    next_attempt_at REAL NOT NULL,                    -- due from then (retry backoff runs in memory)
    last_error      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE INDEX outbox_pending ON outbox (status, next_attempt_at);
INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');
"""


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


class Store:
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
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
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
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                return
            version = int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
            if version < SCHEMA_VERSION and all(v in UPGRADES for v in range(version, SCHEMA_VERSION)):
                for v in range(version, SCHEMA_VERSION):
                    conn.execute(UPGRADES[v])
                conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
                return
        if version != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {version}; this Cantata reads version "
                             f"{SCHEMA_VERSION}. Use a matching Cantata or a new data directory.")

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
                    inputs: dict[str, str], now: float) -> int:
        """Insert a queued task; returns its submission sequence number."""
        try:
            with self._write() as conn:
                return conn.execute(
                    "INSERT INTO tasks (uuid, key_id, model, status, task_json, request_json, inputs_json, created_at)"
                    " VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
                    (uuid, key_id, model, task_json, request_json, json.dumps(inputs), now)).lastrowid
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

    def delete_task(self, uuid: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM tasks WHERE uuid=?", (uuid,)).rowcount > 0

    def mark_running(self, uuid: str, now: float) -> bool:
        """queued -> running, counting an attempt; False if the task is no longer queued."""
        with self._write() as conn:
            cur = conn.execute("UPDATE tasks SET status='running', attempts=attempts+1, started_at=?, progress=0"
                               " WHERE uuid=? AND status='queued'", (now, uuid))
            return cur.rowcount == 1

    def requeue(self, uuid: str, *, uncount_attempt: bool) -> None:
        """running -> queued (restart recovery, or a batch stopped by shutdown that must not count)."""
        with self._write() as conn:
            conn.execute("UPDATE tasks SET status='queued', progress=0, started_at=NULL,"
                         " attempts=attempts - ? WHERE uuid=? AND status='running'",
                         (1 if uncount_attempt else 0, uuid))

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
               from_statuses: Sequence[str] = (QUEUED, RUNNING)) -> bool:
        """Finish a task in one transaction: its results and their media rows, the deliveries it
        owes, and its final status. False (and nothing written) if it was not in `from_statuses`
        any more, e.g. cancelled while its batch was running."""
        marks = ",".join("?" * len(from_statuses))
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE tasks SET status=?, error_json=?, finished_at=?, expires_at=?,"
                f" progress=CASE WHEN ?='success' THEN 100 ELSE progress END"
                f" WHERE uuid=? AND status IN ({marks})",
                (status, json.dumps(error) if error else None, now, expires_at, status, uuid, *from_statuses))
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

    def results(self, uuid: str) -> list[ResultRecord]:
        return [_result_record(dict(r)) for r in self._read("SELECT * FROM results WHERE task_uuid=? ORDER BY idx",
                                                              (uuid,))]

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

    def delivery_attempted(self, delivery_id: int, *, now: float, error: str | None) -> None:
        """Record one try (error None: it succeeded)."""
        with self._write() as conn:
            conn.execute("UPDATE outbox SET attempts=attempts+1, last_error=COALESCE(?, last_error), updated_at=?"
                         " WHERE id=?", (error, now, delivery_id))

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
