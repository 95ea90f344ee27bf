"""The SQLite store's own promises, beyond the conformance suite: several *processes* share one
file (`cantata serve --devices cuda:0,cuda:1` runs one worker process per device on it), and an
older file is upgraded in place.

The processes are real (`python -c`), each with its own `Store`, and they start together: each
says it is ready, then waits for a go-file, so their transactions overlap and SQLite's locking (and its busy timeout)
is what keeps them apart, not a lock of this process."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from cantata.jobs.store import (RUNNING, SCHEMA_VERSION, SUCCESS, UPGRADES, VERSION_1_SCHEMA, NewDelivery, Store,
                                SweepOutcome)
from serverkit import new_uuid

REPO = Path(__file__).resolve().parent.parent

#: Waits for the go-file, then runs the body with `store` open on `path`; prints the body's JSON.
_PROCESS = """
import json, os, sys, time
from cantata.jobs.store import Store, SUCCESS, RUNNING
path, go = sys.argv[1], sys.argv[2]
open(f"{{go}}.{{os.getpid()}}", "w").close()  # ready
while not os.path.exists(go):
    time.sleep(0.005)
store = Store(path)
{body}
store.close()
print(json.dumps(out))
"""

_CLAIMER = """
out = []
worker = f"w{os.getpid()}"
while batch := store.claim_batch("xl-sft", worker=worker, now=10.0, lease_seconds=60.0,
                                 pick=lambda candidates, last_key: candidates[:3]):
    for claim in batch:
        assert store.renew_lease(claim.lease, now=11.0, lease_seconds=60.0, progress=50) is not None
        assert store.finish(claim.record.uuid, SUCCESS, now=12.0, expires_at=99.0, from_statuses=(RUNNING,),
                            lease=claim.lease)
        out.append([claim.record.uuid, claim.lease.token])
"""

_OPENER = """
out = []
for i in range(100):
    Store(os.path.join(os.path.dirname(path), f"fresh-{i}.db")).close()
    out.append(i)
"""

_INSERTER = """
out = []
for i in range(25):
    uuid = f"{os.getpid()}-{i}"
    store.insert_task(uuid=uuid, key_id="alice", model="xl-sft", task_json="{}", request_json="{}", inputs={},
                      now=float(i))
    out.append(uuid)
"""


def _run_together(path: Path, body: str, processes: int, tmp_path: Path) -> list:
    """Start `processes` copies of `body` on `path`, release them at once, return their outputs."""
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [subprocess.Popen([sys.executable, "-c", _PROCESS.format(body=body), str(path), str(go)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                for _ in range(processes)]
    ready = [Path(f"{go}.{child.pid}") for child in children]
    while not all(r.exists() for r in ready):
        assert all(child.poll() is None for child in children), "a process ended before the start"
        time.sleep(0.01)
    go.touch()
    outputs = []
    for child in children:
        stdout, stderr = child.communicate(timeout=300)
        assert child.returncode == 0, stderr
        outputs.append(json.loads(stdout))
    return outputs


def add(store: Store, *, key: str = "alice", now: float = 1.0) -> str:
    uuid = new_uuid()
    store.insert_task(uuid=uuid, key_id=key, model="xl-sft", task_json="{}", request_json="{}", inputs={}, now=now)
    return uuid


def test_worker_processes_sharing_one_file_claim_each_task_once(tmp_path):
    path = tmp_path / "cantata.db"
    store = Store(path)
    uuids = {add(store, key=f"key{i % 3}", now=float(i)) for i in range(240)}
    outputs = _run_together(path, _CLAIMER, 3, tmp_path)
    claimed = [uuid for output in outputs for uuid, _ in output]
    tokens = [token for output in outputs for _, token in output]
    assert len(claimed) == len(set(claimed)) == 240 and set(claimed) == uuids
    assert sorted(tokens) == list(range(1, 241))  # one counter for every process, no token twice
    for uuid in uuids:
        record = store.get_task(uuid)
        assert (record.status, record.attempts, record.progress) == (SUCCESS, 1, 100)
    store.close()


def test_processes_opening_a_new_file_together_wait_for_each_other(tmp_path):
    path = tmp_path / "fresh.db"  # no schema yet: the first one creates it, the others find it
    outputs = _run_together(path, _INSERTER, 4, tmp_path)
    store = Store(path)
    stored = [r.uuid for r in store.tasks_with_status("queued")]
    assert sorted(stored) == sorted(u for output in outputs for u in output) and len(stored) == 100
    assert store.queue_depth("xl-sft") == 100
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)


def test_processes_racing_to_open_fresh_files_all_get_in(tmp_path):
    # Switching a fresh file to WAL is a lock upgrade that SQLite refuses at once, without its busy
    # timeout, when two connections race for it (store._enter_wal retries); CI met that race once,
    # with four processes. Here eight processes race on a hundred fresh files.
    outputs = _run_together(tmp_path / "first.db", _OPENER, 8, tmp_path)
    assert all(output == list(range(100)) for output in outputs)
    for i in range(100):
        with sqlite3.connect(tmp_path / f"fresh-{i}.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)


def test_a_version_2_file_gains_leases_and_keeps_its_tasks(tmp_path):
    path = tmp_path / "cantata.db"
    with sqlite3.connect(path) as conn:  # what a version-2 Cantata wrote: a queued and a running task
        conn.executescript(VERSION_1_SCHEMA + ";" + UPGRADES[1] + ";UPDATE meta SET value='2'")
        for uuid, status, attempts in (("queued-task", "queued", 0), ("running-task", "running", 1)):
            conn.execute("INSERT INTO tasks (uuid, key_id, model, status, attempts, task_json, request_json,"
                         " created_at) VALUES (?, 'alice', 'xl-sft', ?, ?, '{}', '{}', 1.0)", (uuid, status, attempts))
    store = Store(path)
    assert [r.uuid for r in store.tasks_with_status("queued", "running")] == ["queued-task", "running-task"]
    (claim,) = store.claim_batch("xl-sft", worker="w1", now=2.0, lease_seconds=30.0,
                                 pick=lambda candidates, last_key: candidates[:1])
    assert (claim.record.uuid, claim.record.attempts, claim.lease.token) == ("queued-task", 1, 1)
    outcome = store.sweep_leases(100.0, max_attempts=1, error={"code": "taskInterrupted", "message": "m"},
                                 expires_at=200.0, deliveries_for=lambda r: [NewDelivery("webhook", "https://h", None)])
    assert outcome == SweepOutcome(ran=True, interrupted=("queued-task",))  # the leaseless one is left to recovery
    assert store.get_task("running-task").status == RUNNING
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)


def test_a_new_file_is_the_first_schema_plus_every_upgrade(tmp_path):
    Store(tmp_path / "new.db").close()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.executescript(VERSION_1_SCHEMA)
    Store(tmp_path / "old.db").close()

    def schema(name: str) -> list[tuple]:
        with sqlite3.connect(tmp_path / name) as conn:
            return conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()

    assert schema("new.db") == schema("old.db")
