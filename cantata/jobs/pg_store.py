"""The PostgreSQL job store: the same tables and transitions as the SQLite store, shared by any
number of API and worker processes on any number of machines (`cantata.jobs.store_contract`).

Why psycopg 3 with `psycopg_pool` rather than asyncpg: the engine calls its store synchronously
from worker threads, download threads, the sweeper and the event loop alike. psycopg's blocking
API with a thread-safe pool fits that as it is; asyncpg would need an event loop in every caller
(or a loop thread and a hop per query) for no gain at our query rate.

Transactions run at READ COMMITTED. Every transition is one conditional UPDATE (PostgreSQL
re-checks the WHERE clause on the row it locked, so of two racing callers one wins); `finish`
and the claims are one transaction each.

Claims (`claim_batch`): read a window of queued candidates without locking, let the caller's
picker choose a batch, then lock and mark exactly the chosen rows with `FOR UPDATE SKIP LOCKED`.
A row another claimer holds (or took meanwhile) is skipped, never waited for; if the picker's
whole batch was taken, the picker runs again without those rows. Locking only the chosen rows
keeps claimers on the same model from starving each other (locking the whole window would hand
every concurrent claimer an empty batch). Key fairness is shared through `claim_cursor`, the key
that headed the previous batch of each model; it is read unlocked, so two claims at the same
instant may both follow the same key: turns are taken across workers, approximately.

Outbox claims (`claim_deliveries`) lock the due head rows of each task with `FOR UPDATE SKIP
LOCKED` and push their `next_attempt_at` past the hold in the same statement: a concurrent
claimer skips the locked rows, and one that reaches a row after the claim committed re-checks it
(READ COMMITTED re-evaluates the locked row's WHERE clause) and finds it no longer due.

Leases use the caller's clock like every other time here, so the nodes' clocks must agree (NTP)
to well within a lease. Fencing does not depend on clocks: each claim draws a fresh token from a
sequence, and a fenced write requires the task's current token.

Schema: `MIGRATIONS[i]` takes a database from version i to i+1, all in one transaction under an
advisory lock (nodes starting together migrate once); a database at a newer version than
`SCHEMA_VERSION` is refused with `StoreError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from .store_contract import (ERROR, QUEUED, RUNNING, Claim, Delivery, DuplicateTask, Lease, MediaRecord,
                             NewDelivery, NewResult, Picker, ResultRecord, StoreError, SweepOutcome, TaskRecord)

#: Advisory lock keys (64-bit, arbitrary but fixed): one for migrations, one for the lease sweeper.
MIGRATION_LOCK = 0x43414E5441544101
SWEEPER_LOCK = 0x43414E5441544102
#: Rounds of `claim_batch` when every task the picker chose was taken by another claimer.
_CLAIM_ROUNDS = 4
#: How long the readiness probe waits for a connection: a probe must answer, not hang.
_PROBE_TIMEOUT = 5.0

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the SQLite store's tables (see cantata/jobs/store.py for each column's meaning).
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE tasks (
        seq          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,  -- submission order
        uuid         TEXT PRIMARY KEY,
        key_id       TEXT NOT NULL,
        model        TEXT NOT NULL,
        status       TEXT NOT NULL CHECK (status IN ('queued','running','success','error','cancelled')),
        attempts     INTEGER NOT NULL DEFAULT 0,
        progress     INTEGER NOT NULL DEFAULT 0,
        task_json    TEXT NOT NULL,
        request_json TEXT NOT NULL,
        inputs       JSONB NOT NULL DEFAULT '{}',                 -- input URL -> media id
        error        JSONB,                                       -- {code, message, parameter?}
        created_at   DOUBLE PRECISION NOT NULL,
        started_at   DOUBLE PRECISION,
        finished_at  DOUBLE PRECISION,
        expires_at   DOUBLE PRECISION
    );
    CREATE INDEX tasks_by_status ON tasks (status, model, seq);
    CREATE INDEX tasks_by_expiry ON tasks (expires_at);
    CREATE TABLE results (
        task_uuid   TEXT NOT NULL REFERENCES tasks (uuid) ON DELETE CASCADE,
        idx         INTEGER NOT NULL,
        audio_uuid  TEXT NOT NULL UNIQUE,
        seed        BIGINT NOT NULL,
        ext         TEXT NOT NULL,
        mime        TEXT NOT NULL,
        size        BIGINT NOT NULL,
        gpu_seconds DOUBLE PRECISION NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL,
        expires_at  DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (task_uuid, idx)
    );
    CREATE TABLE media (
        id          TEXT PRIMARY KEY,
        kind        TEXT NOT NULL CHECK (kind IN ('upload','result')),
        storage_key TEXT NOT NULL,
        ext         TEXT NOT NULL,
        mime        TEXT NOT NULL,
        size        BIGINT NOT NULL,
        owner       TEXT NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL,
        expires_at  DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX media_by_expiry ON media (expires_at);
    CREATE TABLE outbox (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        task_uuid       TEXT NOT NULL REFERENCES tasks (uuid) ON DELETE CASCADE,
        kind            TEXT NOT NULL CHECK (kind IN ('upload','webhook')),
        url             TEXT NOT NULL,
        result_idx      INTEGER,                                  -- NULL: the task's error
        status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','done','failed')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        last_error      TEXT,
        created_at      DOUBLE PRECISION NOT NULL,
        updated_at      DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX outbox_pending ON outbox (status, next_attempt_at);
    INSERT INTO meta VALUES ('schema_version', '0');
    """,
    # 1 -> 2: leases for worker processes sharing the store, and the shared fairness cursor.
    """
    ALTER TABLE tasks ADD COLUMN claimed_by  TEXT;                -- worker id of the last claim
    ALTER TABLE tasks ADD COLUMN lease_token BIGINT;              -- fencing token of the current claim
    ALTER TABLE tasks ADD COLUMN lease_until DOUBLE PRECISION;    -- the claim lapses after this
    CREATE SEQUENCE lease_tokens;
    CREATE INDEX tasks_by_lease ON tasks (lease_until) WHERE status = 'running';
    CREATE TABLE claim_cursor (model TEXT PRIMARY KEY, last_key TEXT NOT NULL);
    """,
    # 2 -> 3: the planner's metadata of each result (`plannedMetadata`), NULL when it did not run.
    """
    ALTER TABLE results ADD COLUMN planned JSONB;
    """,
    # 3 -> 4: a task's outbox rows by id: the outbox claim's "oldest pending row of its task"
    # check, `deliveries(uuid)` and the cascade from a deleted task read it instead of the table.
    """
    CREATE INDEX outbox_by_task ON outbox (task_uuid, id);
    """,
    # 4 -> 5: the WebSocket session a sync task was sent over, so any node can resume the session.
    """
    ALTER TABLE tasks ADD COLUMN ws_session TEXT;
    CREATE INDEX tasks_by_ws_session ON tasks (ws_session) WHERE ws_session IS NOT NULL;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_TASK_COLUMNS = ("seq, uuid, key_id, model, status, attempts, progress, task_json, request_json, inputs, error,"
                 " created_at, started_at, finished_at, expires_at")
_DELIVERY_COLUMNS = "id, task_uuid, kind, url, result_idx, status, attempts, next_attempt_at, last_error"
_RELEASE = "status='queued', progress=0, started_at=NULL, lease_token=NULL, lease_until=NULL"


class PostgresStore:
    """`LeasingStore` on PostgreSQL; `conninfo` is a `postgresql://` URL or a libpq string."""

    def __init__(self, conninfo: str, *, pool_size: int = 8, connect_timeout: float = 30.0) -> None:
        self.where = _describe(conninfo)
        # `check`: a connection the server dropped (restart, failover) is replaced before use
        # instead of failing the caller's transaction.
        self._pool = ConnectionPool(conninfo, min_size=1, max_size=pool_size, timeout=connect_timeout,
                                    kwargs={"row_factory": dict_row}, check=ConnectionPool.check_connection,
                                    open=False, name="cantata-store")
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
            self._migrate()
        except (psycopg.Error, PoolTimeout) as exc:
            self._pool.close()
            raise StoreError(f"cannot use the PostgreSQL store at {self.where}: {exc}") from exc
        except StoreError:
            self._pool.close()
            raise

    # -- connections, transactions, schema -------------------------------------------------------

    @contextmanager
    def _tx(self, timeout: float | None = None) -> Iterator[psycopg.Connection]:
        """One transaction on a pooled connection: committed on return, rolled back on error."""
        with self._pool.connection(timeout=timeout) as conn, conn.transaction():
            yield conn

    def close(self) -> None:
        self._pool.close()

    def _migrate(self) -> None:
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            has_meta = conn.execute("SELECT to_regclass('meta') IS NOT NULL AS present").fetchone()["present"]
            version = 0
            if has_meta:
                version = int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()["value"])
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.where} has schema version {version}; this Cantata reads version "
                                 f"{SCHEMA_VERSION}. Use a matching Cantata or a new database.")
            if version == SCHEMA_VERSION:
                return
            for migration in MIGRATIONS[version:]:
                conn.execute(migration)
            conn.execute("UPDATE meta SET value=%s WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    def writable(self) -> bool:
        try:
            with self._tx(timeout=_PROBE_TIMEOUT) as conn:
                conn.execute("UPDATE meta SET value=value WHERE key='schema_version'")
            return True
        except (psycopg.Error, PoolTimeout):
            return False

    # -- tasks ---------------------------------------------------------------------------------

    def insert_task(self, *, uuid: str, key_id: str, model: str, task_json: str, request_json: str,
                    inputs: dict[str, str], now: float, ws_session: str | None = None) -> int:
        try:
            with self._tx() as conn:
                return conn.execute(
                    "INSERT INTO tasks (uuid, key_id, model, status, task_json, request_json, inputs, created_at,"
                    " ws_session) VALUES (%s, %s, %s, 'queued', %s, %s, %s, %s, %s) RETURNING seq",
                    (uuid, key_id, model, task_json, request_json, Jsonb(inputs), now, ws_session)).fetchone()["seq"]
        except psycopg.errors.UniqueViolation:
            raise DuplicateTask(uuid) from None

    def get_task(self, uuid: str) -> TaskRecord | None:
        with self._tx() as conn:
            row = conn.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE uuid=%s", (uuid,)).fetchone()
        return TaskRecord(**row) if row else None

    def tasks_with_status(self, *statuses: str) -> list[TaskRecord]:
        with self._tx() as conn:
            rows = conn.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE status = ANY(%s) ORDER BY seq",
                                (list(statuses),)).fetchall()
        return [TaskRecord(**r) for r in rows]

    def tasks_of_key(self, key_id: str, *, before_seq: int | None, limit: int) -> list[TaskRecord]:
        with self._tx() as conn:
            rows = conn.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE key_id=%s AND seq<%s ORDER BY seq DESC "
                                "LIMIT %s", (key_id, before_seq if before_seq is not None else 2**63 - 1,
                                             limit)).fetchall()
        return [TaskRecord(**r) for r in rows]

    def tasks_of_ws_session(self, key_id: str, ws_session: str) -> list[TaskRecord]:
        with self._tx() as conn:
            rows = conn.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE ws_session=%s AND key_id=%s ORDER BY seq",
                                (ws_session, key_id)).fetchall()
        return [TaskRecord(**r) for r in rows]

    def delete_task(self, uuid: str) -> bool:
        with self._tx() as conn:
            return conn.execute("DELETE FROM tasks WHERE uuid=%s", (uuid,)).rowcount > 0

    def queue_depth(self, model: str | None = None) -> int:
        with self._tx() as conn:
            return conn.execute("SELECT COUNT(*) AS n FROM tasks WHERE status='queued'"
                                " AND (%s::text IS NULL OR model=%s)", (model, model)).fetchone()["n"]

    def queued_ahead(self, uuid: str) -> int | None:
        with self._tx() as conn:
            row = conn.execute("SELECT (SELECT COUNT(*) FROM tasks AS o WHERE o.status='queued' AND o.model=t.model"
                               " AND o.seq < t.seq) AS ahead FROM tasks AS t WHERE t.uuid=%s AND t.status='queued'",
                               (uuid,)).fetchone()
        return row["ahead"] if row else None

    def mark_running(self, uuid: str, now: float) -> bool:
        with self._tx() as conn:
            return conn.execute("UPDATE tasks SET status='running', attempts=attempts+1, started_at=%s, progress=0"
                                " WHERE uuid=%s AND status='queued'", (now, uuid)).rowcount == 1

    def requeue(self, uuid: str, *, uncount_attempt: bool, lease: Lease | None = None) -> None:
        with self._tx() as conn:
            conn.execute(f"UPDATE tasks SET {_RELEASE}, attempts=attempts - %s"
                         f" WHERE uuid=%s AND status='running'{_fence(lease)}",
                         (1 if uncount_attempt else 0, uuid, *_fence_args(lease)))

    def set_progress(self, uuid: str, progress: int) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE tasks SET progress=%s WHERE uuid=%s AND status='running'", (progress, uuid))

    def set_input(self, uuid: str, url: str, media_id: str) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE tasks SET inputs = inputs || jsonb_build_object(%s::text, %s::text) WHERE uuid=%s",
                         (url, media_id, uuid))

    def finish(self, uuid: str, status: str, *, now: float, expires_at: float,
               error: dict[str, Any] | None = None, results: Sequence[NewResult] = (),
               owner: str = "", deliveries: Sequence[NewDelivery] = (),
               from_statuses: Sequence[str] = (QUEUED, RUNNING), lease: Lease | None = None) -> bool:
        with self._tx() as conn:
            return _finish(conn, uuid, status, now=now, expires_at=expires_at, error=error, results=results,
                           owner=owner, deliveries=deliveries, from_statuses=from_statuses, lease=lease)

    def results(self, uuid: str) -> list[ResultRecord]:
        with self._tx() as conn:
            rows = conn.execute("SELECT task_uuid, idx, audio_uuid, seed, ext, mime, size, gpu_seconds, created_at,"
                                " expires_at, planned FROM results WHERE task_uuid=%s ORDER BY idx", (uuid,)).fetchall()
        return [ResultRecord(**r) for r in rows]

    # -- claims and leases -----------------------------------------------------------------------

    def claim_batch(self, model: str, *, worker: str, now: float, lease_seconds: float, pick: Picker,
                    window: int = 64) -> list[Claim]:
        passed_over: list[str] = []  # chosen rows another claimer held or took
        for _ in range(_CLAIM_ROUNDS):
            with self._tx() as conn:
                rows = conn.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE status='queued' AND model=%s"
                                    " AND NOT uuid = ANY(%s) ORDER BY seq LIMIT %s",
                                    (model, passed_over, window)).fetchall()
                if not rows:
                    return []
                cursor = conn.execute("SELECT last_key FROM claim_cursor WHERE model=%s", (model,)).fetchone()
                candidates = [TaskRecord(**r) for r in rows]
                offered = {r.uuid for r in candidates}
                chosen = [r.uuid for r in pick(candidates, cursor and cursor["last_key"]) if r.uuid in offered]
                if not chosen:
                    return []
                claimed = conn.execute(
                    f"UPDATE tasks SET status='running', attempts=attempts+1, started_at=%s, progress=0,"
                    f" claimed_by=%s, lease_token=nextval('lease_tokens'), lease_until=%s"
                    f" WHERE uuid IN (SELECT uuid FROM tasks WHERE uuid = ANY(%s) AND status='queued'"
                    f"                FOR UPDATE SKIP LOCKED)"
                    f" RETURNING {_TASK_COLUMNS}, lease_token",
                    (now, worker, now + lease_seconds, chosen)).fetchall()
                if claimed:
                    by_uuid = {r["uuid"]: r for r in claimed}
                    batch = [by_uuid[u] for u in chosen if u in by_uuid]
                    conn.execute("INSERT INTO claim_cursor VALUES (%s, %s)"
                                 " ON CONFLICT (model) DO UPDATE SET last_key = excluded.last_key",
                                 (model, batch[0]["key_id"]))
                    return [Claim(record=TaskRecord(**{k: v for k, v in r.items() if k != "lease_token"}),
                                  lease=Lease(uuid=r["uuid"], worker=worker, token=r["lease_token"],
                                              expires_at=now + lease_seconds)) for r in batch]
            passed_over += chosen
        return []

    def renew_lease(self, lease: Lease, *, now: float, lease_seconds: float,
                    progress: int | None = None) -> Lease | None:
        with self._tx() as conn:
            renewed = conn.execute("UPDATE tasks SET lease_until=%s, progress=COALESCE(%s, progress)"
                                   " WHERE uuid=%s AND status='running' AND lease_token=%s",
                                   (now + lease_seconds, progress, lease.uuid, lease.token)).rowcount == 1
        return Lease(lease.uuid, lease.worker, lease.token, now + lease_seconds) if renewed else None

    def sweep_leases(self, now: float, *, max_attempts: int, error: dict[str, Any], expires_at: float,
                     deliveries_for: Callable[[TaskRecord], Sequence[NewDelivery]]) -> SweepOutcome:
        requeued, interrupted = [], []
        with self._tx() as conn:
            if not conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS locked", (SWEEPER_LOCK,)).fetchone()["locked"]:
                return SweepOutcome(ran=False)
            expired = conn.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE status='running' AND lease_until < %s"
                                   " ORDER BY seq FOR UPDATE SKIP LOCKED", (now,)).fetchall()
            for row in expired:
                record = TaskRecord(**row)
                if record.attempts >= max_attempts:
                    _finish(conn, record.uuid, ERROR, now=now, expires_at=expires_at, error=error,
                            deliveries=deliveries_for(record), from_statuses=(RUNNING,))
                    interrupted.append(record.uuid)
                else:
                    conn.execute(f"UPDATE tasks SET {_RELEASE} WHERE uuid=%s", (record.uuid,))
                    requeued.append(record.uuid)
        return SweepOutcome(ran=True, requeued=tuple(requeued), interrupted=tuple(interrupted))

    # -- media ---------------------------------------------------------------------------------

    def insert_media(self, record: MediaRecord) -> None:
        with self._tx() as conn:
            conn.execute("INSERT INTO media VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                         (record.id, record.kind, record.storage_key, record.ext, record.mime, record.size,
                          record.owner, record.created_at, record.expires_at))

    def get_media(self, media_id: str) -> MediaRecord | None:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM media WHERE id=%s", (media_id.lower(),)).fetchone()
        return MediaRecord(**row) if row else None

    def delete_media(self, media_id: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM media WHERE id=%s", (media_id.lower(),))

    # -- outbox --------------------------------------------------------------------------------

    def deliveries(self, uuid: str) -> list[Delivery]:
        return self._deliveries("task_uuid=%s", (uuid,))

    def pending_deliveries(self) -> list[Delivery]:
        return self._deliveries("status='pending'", ())

    def _deliveries(self, where: str, args: Sequence) -> list[Delivery]:
        with self._tx() as conn:
            rows = conn.execute(f"SELECT {_DELIVERY_COLUMNS} FROM outbox WHERE {where} ORDER BY id", args).fetchall()
        return [Delivery(**r) for r in rows]

    def claim_deliveries(self, *, now: float, hold_seconds: float, limit: int = 32) -> list[Delivery]:
        with self._tx() as conn:
            rows = conn.execute(
                "WITH due AS ("
                "  SELECT id FROM outbox AS o WHERE status='pending' AND next_attempt_at <= %s AND NOT EXISTS ("
                "    SELECT 1 FROM outbox AS p WHERE p.task_uuid=o.task_uuid AND p.status='pending' AND p.id < o.id)"
                "  ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " UPDATE outbox SET next_attempt_at=%s, updated_at=%s FROM due WHERE outbox.id=due.id"
                f" RETURNING {', '.join('outbox.' + c for c in _DELIVERY_COLUMNS.split(', '))}",
                (now, limit, now + hold_seconds, now)).fetchall()
        return sorted((Delivery(**r) for r in rows), key=lambda d: d.id)

    def delivery_attempted(self, delivery_id: int, *, now: float, error: str | None,
                           retry_at: float | None = None) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE outbox SET attempts=attempts+1, last_error=COALESCE(%s, last_error), updated_at=%s,"
                         " next_attempt_at=COALESCE(%s, next_attempt_at) WHERE id=%s",
                         (error, now, retry_at, delivery_id))

    def delivery_settled(self, delivery_id: int, status: str, *, now: float, error: str | None = None) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE outbox SET status=%s, last_error=COALESCE(%s, last_error), updated_at=%s"
                         " WHERE id=%s", (status, error, now, delivery_id))

    # -- expiry --------------------------------------------------------------------------------

    def expired_media(self, now: float) -> list[MediaRecord]:
        with self._tx() as conn:
            rows = conn.execute("SELECT * FROM media WHERE expires_at <= %s", (now,)).fetchall()
        return [MediaRecord(**r) for r in rows]

    def delete_expired_tasks(self, now: float) -> int:
        with self._tx() as conn:
            return conn.execute("DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= %s",
                                (now,)).rowcount


def _finish(conn: psycopg.Connection, uuid: str, status: str, *, now: float, expires_at: float,
            error: dict[str, Any] | None, from_statuses: Sequence[str], results: Sequence[NewResult] = (),
            owner: str = "", deliveries: Sequence[NewDelivery] = (), lease: Lease | None = None) -> bool:
    """`finish` inside the caller's transaction (the sweeper fails tasks in its own)."""
    cur = conn.execute(
        "UPDATE tasks SET status=%s, error=%s, finished_at=%s, expires_at=%s, lease_until=NULL,"
        " progress=CASE WHEN %s='success' THEN 100 ELSE progress END"
        f" WHERE uuid=%s AND status = ANY(%s){_fence(lease)}",
        (status, Jsonb(error) if error else None, now, expires_at, status, uuid, list(from_statuses),
         *_fence_args(lease)))
    if cur.rowcount != 1:
        return False
    with conn.cursor() as c:
        c.executemany("INSERT INTO media VALUES (%s, 'result', %s, %s, %s, %s, %s, %s, %s)",
                      [(r.audio_uuid, r.storage_key, r.ext, r.mime, r.size, owner, now, r.expires_at)
                       for r in results])
        c.executemany("INSERT INTO results VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                      [(uuid, r.idx, r.audio_uuid, r.seed, r.ext, r.mime, r.size, r.gpu_seconds, now, r.expires_at,
                        Jsonb(r.planned) if r.planned is not None else None) for r in results])
        c.executemany("INSERT INTO outbox (task_uuid, kind, url, result_idx, next_attempt_at, created_at,"
                      " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                      [(uuid, d.kind, d.url, d.result_idx, now, now, now) for d in deliveries])
    return True


def _fence(lease: Lease | None) -> str:
    """The extra WHERE clause of a write fenced by `lease` (none without one)."""
    return "" if lease is None else " AND lease_token=%s"


def _fence_args(lease: Lease | None) -> tuple:
    return () if lease is None else (lease.token,)


def _describe(conninfo: str) -> str:
    """Where the store is, for messages: host, port and database, never the password."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "the configured PostgreSQL database"
    host = params.get("host") or "localhost"
    return f"postgresql://{host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"
