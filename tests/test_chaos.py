"""Chaos: a whole scaled-out deployment loses processes while it serves 200 tasks (issue 7 item 8).

Topology: a real PostgreSQL (the store), a real S3-compatible server (SeaweedFS, the media), two
API-only nodes (`serve --no-worker`) and three worker processes (`cantata worker`), all on the
tiny demo checkpoints with one sampler step and a 4 s lease. 200 tasks (sync, async and webhook
to a loopback receiver; numberResults 1-3; mostly 16 kHz mono MP3, some WAV) are sent to both API
nodes at once, and during the run:

1. a worker holding a running batch is killed with SIGKILL (its leases lapse, the sweeper puts the
   batch back in the queue with the attempt counted);
2. another worker holding a running batch is frozen with SIGSTOP until every task it held was
   claimed again by another worker and finished, then thawed with SIGCONT: it resumes its stale
   batch, and every write it tries is fenced off by the lease it lost;
3. API node B is killed with SIGKILL once every task is in the store (a sync request waiting on B
   fails on the client: that task was submitted, its outcome is read from node A).

Asserted afterwards:
* every task is in the store exactly once, in a terminal state, and node A answers the same
  state (a sync answer that arrived before B died agrees with it);
* every result downloads from node A (S3 stream-through): non-empty, a WAV or MP3 header;
* the frozen worker overwrote nothing: the results (audioUUIDs, seeds) read before SIGCONT equal
  those after it, and the store shows the retry (attempts 2, another worker's claim);
* webhooks are delivered at least once: every owed webhook (one per result, or one carrying the
  error) arrives, possibly more than once. The contract (`cantata/api/delivery.py`) is
  at-least-once: a node that dies after sending a webhook but before recording it lets its claim
  lapse and the row is sent again, by any node; receivers deduplicate on taskUUID + audioUUID.
  Every copy of one webhook carries the same outcome.

The counts (tasks by status, tasks with attempts > 1, webhook duplicates, the run time) are
printed (`pytest -s` shows them).
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import time

import httpx
import pytest

from clusterkit import Cluster, audio_header_ok
from pgserver import postgres_server, postgres_url  # noqa: F401  (fixtures)
from s3server import s3_bucket, s3_server  # noqa: F401  (fixtures)
from serverkit import Receiver, server_checkpoints, task, wait_for

pytestmark = pytest.mark.slow

TASKS = 200
LEASE_SECONDS = 4
TERMINAL = ("success", "error", "cancelled")
SMALL_MP3 = {"outputFormat": "MP3", "audioSettings": {"sampleRate": 16000, "channels": 1}}


def chaos_tasks(receiver_url: str) -> list[tuple[str, dict]]:
    """(delivery, task) pairs: deliveries and result counts interleaved, one task in ten a WAV."""
    out = []
    for i in range(TASKS):
        delivery = ("sync", "async", "webhook")[i % 3]
        fields = {"outputFormat": "WAV"} if i % 10 == 0 else SMALL_MP3
        t = task(numberResults=1 + (i // 3) % 3, steps=1, duration=30, **fields)
        if delivery == "async":
            t["deliveryMethod"] = "async"
        elif delivery == "webhook":
            t.update(deliveryMethod="async", webhookURL=f"{receiver_url}/hook/{t['taskUUID']}")
        out.append((delivery, t))
    return out


class Store:
    """Direct reads of the shared PostgreSQL store."""

    def __init__(self, url: str) -> None:
        import psycopg
        from psycopg.rows import dict_row

        self.conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)

    def tasks(self, uuids: list[str]) -> dict[str, dict]:
        rows = self.conn.execute("SELECT uuid, status, attempts, claimed_by, lease_token, error FROM tasks"
                                 " WHERE uuid = ANY(%s)", (uuids,)).fetchall()
        return {r["uuid"]: r for r in rows}

    def results(self, uuids: list[str]) -> dict[str, list[tuple[str, int]]]:
        out = collections.defaultdict(list)
        for r in self.conn.execute("SELECT task_uuid, idx, audio_uuid, seed FROM results WHERE task_uuid = ANY(%s)"
                                   " ORDER BY task_uuid, idx", (uuids,)).fetchall():
            out[r["task_uuid"]].append((r["audio_uuid"], r["seed"]))
        return dict(out)

    def count(self, uuids: list[str], statuses: tuple[str, ...]) -> int:
        return self.conn.execute("SELECT count(*) AS n FROM tasks WHERE uuid = ANY(%s) AND status = ANY(%s)",
                                 (uuids, list(statuses))).fetchone()["n"]

    def running_by(self, uuids: list[str]) -> dict[str, list[str]]:
        """claimed_by -> the uuids it runs now."""
        out = collections.defaultdict(list)
        for r in self.conn.execute("SELECT uuid, claimed_by FROM tasks WHERE uuid = ANY(%s) AND status='running'",
                                   (uuids,)).fetchall():
            out[r["claimed_by"]].append(r["uuid"])
        return dict(out)


def worker_of(claimed_by: str, workers) -> object | None:
    pid = int(claimed_by.split(":")[1])
    return next((w for w in workers if w.pid == pid), None)


def submit(node, t: dict) -> dict:
    """Send one task; a failure on the client side (node killed, sync wait timed out) is recorded."""
    try:
        resp = node.post([t], timeout=260)  # longer than the server's sync wait
        return {"node": node.name, "status": resp.status_code, "body": resp.json()}
    except httpx.HTTPError as exc:
        return {"node": node.name, "failed": type(exc).__name__}


def test_chaos_kill_freeze_and_lose_an_api_node(tmp_path, tmp_path_factory, postgres_url, s3_server, s3_bucket):
    checkpoints = server_checkpoints(tmp_path_factory)
    env = {"AWS_ENDPOINT_URL": s3_server.endpoint_url, "AWS_ACCESS_KEY_ID": s3_server.access_key,
           "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "AWS_REGION": s3_server.region,
           "CANTATA_LEASE_SECONDS": str(LEASE_SECONDS), "CANTATA_WEBHOOK_BASE_DELAY": "0.2",
           # a delivery claim holds its outbox row for 2 x this + 10 s: B's claims lapse within the run
           "CANTATA_OUTBOUND_TOTAL_TIMEOUT": "5", "CANTATA_SYNC_WAIT_TIMEOUT": "200"}
    started = time.monotonic()
    store = Store(postgres_url)
    with Receiver() as receiver, Cluster(checkpoints, tmp_path / "data", store=postgres_url,
                                         media=f"s3://{s3_bucket}/chaos", env=env) as cluster:
        a, b = cluster.api(name="api-a"), cluster.api(name="api-b")
        workers = [cluster.worker(name=f"worker-{i}") for i in range(3)]
        for w in workers:
            w.wait_loaded(180)
        plan = chaos_tasks(receiver.url)
        uuids = [t["taskUUID"] for _, t in plan]
        setup_seconds = time.monotonic() - started
        run_started = time.monotonic()

        pool = concurrent.futures.ThreadPoolExecutor(max_workers=TASKS)
        futures = {t["taskUUID"]: pool.submit(submit, (a, b)[i % 2], t) for i, (_, t) in enumerate(plan)}
        wait_for(lambda: len(store.tasks(uuids)) == TASKS, 120, "every task in the store")

        # 1. kill -9 a worker in the middle of a batch
        def busy_worker(candidates):
            for claimer, running in store.running_by(uuids).items():
                w = worker_of(claimer, candidates)
                if w is not None:
                    return w, running
            return None

        killed, killed_tasks = wait_for(lambda: busy_worker(workers), 120, "a worker running a batch", interval=0.02)
        killed.kill()

        # 2. SIGSTOP another worker holding a batch, past its lease, until the retry finished
        alive = [w for w in workers if w is not killed]
        frozen, frozen_tasks = wait_for(lambda: busy_worker(alive), 120, "a second busy worker", interval=0.02)
        frozen.freeze()
        frozen_id = store.tasks(frozen_tasks)[frozen_tasks[0]]["claimed_by"]

        def retried_and_finished():
            rows = store.tasks(frozen_tasks)
            # retried elsewhere and finished, or (already on its last attempt) failed by the sweeper
            return all(r["status"] in TERMINAL and (r["claimed_by"] != frozen_id or r["status"] == "error")
                       for r in rows.values())

        wait_for(retried_and_finished, 180, "the frozen worker's tasks finished elsewhere", interval=0.2)
        frozen_rows = store.tasks(frozen_tasks)
        before_thaw = store.results(frozen_tasks)
        frozen.thaw()

        # 3. kill -9 API node B
        wait_for(lambda: store.count(uuids, TERMINAL) >= TASKS // 2, 300, "half the tasks finished", interval=0.2)
        b.kill()

        wait_for(lambda: store.count(uuids, TERMINAL) == TASKS, 300, "every task finished", interval=0.5)
        run_seconds = time.monotonic() - run_started
        outcomes = {u: f.result() for u, f in futures.items()}
        pool.shutdown()

        # every task exactly once, terminal; node A agrees with the store
        rows = store.tasks(uuids)
        results = store.results(uuids)
        assert len(rows) == TASKS and all(r["status"] in TERMINAL for r in rows.values())
        by_status = collections.Counter(r["status"] for r in rows.values())
        answers = {}
        for u in uuids:
            body = a.post([{"taskType": "getResponse", "taskUUID": u}], timeout=30).json()
            items = body.get("data", []) + body.get("errors", [])
            assert {i["status"] for i in items} == {rows[u]["status"] if rows[u]["status"] == "success" else "error"}
            answers[u] = items
            if rows[u]["status"] == "success":
                assert [i["audioUUID"] for i in items] == [audio for audio, _ in results[u]]
                assert [i["seed"] for i in items] == [seed for _, seed in results[u]]
        for (delivery, t), u in zip(plan, uuids):
            outcome = outcomes[u]
            if delivery == "sync" and outcome.get("status") == 200 and "data" in outcome["body"]:
                assert [i["audioUUID"] for i in outcome["body"]["data"]] == [i["audioUUID"] for i in answers[u]]
            if delivery != "sync" and "failed" not in outcome:  # async acks arrived before B died
                assert outcome["status"] == 200, outcome

        # every result downloads from the surviving node
        downloaded = 0
        for u in uuids:
            for item in answers[u]:
                if item["status"] == "success":
                    url = item["audioURL"].replace(b.url, a.url)
                    resp = httpx.get(url, timeout=60)
                    assert resp.status_code == 200 and resp.content and audio_header_ok(resp.content), (url, resp)
                    downloaded += 1

        # the frozen worker overwrote nothing
        assert store.results(frozen_tasks) == before_thaw
        final_frozen = store.tasks(frozen_tasks)
        for u in frozen_tasks:
            assert final_frozen[u]["status"] == frozen_rows[u]["status"]
            assert final_frozen[u]["lease_token"] == frozen_rows[u]["lease_token"]
            if frozen_rows[u]["status"] == "success":
                assert final_frozen[u]["attempts"] >= 2 and final_frozen[u]["claimed_by"] != frozen_id
        assert frozen.alive(), frozen.tail()

        # every webhook at least once, each copy with the same outcome
        owed = {}
        for (delivery, t), u in zip(plan, uuids):
            if delivery == "webhook":
                owed.update({(u, i.get("audioUUID")): i["status"] for i in answers[u]})

        def received() -> collections.Counter:
            seen = collections.Counter()
            for body in receiver.json_bodies():
                for item in body.get("data", []) + body.get("errors", []):
                    key = (item["taskUUID"], item.get("audioUUID"))
                    assert owed.get(key) == item["status"], item
                    seen[key] += 1
            return seen

        wait_for(lambda: set(received()) == set(owed), 120, "every webhook delivered", interval=0.5)
        seen = received()
        duplicates = sum(n - 1 for n in seen.values())

        client_failures = collections.Counter(o.get("failed") or o["body"].get("errors", [{}])[0].get("code", "ok")
                                              for o in outcomes.values() if "failed" in o or "errors" in o["body"])
        print(f"\nchaos: {TASKS} tasks in {run_seconds:.0f} s (+{setup_seconds:.0f} s start-up); by status "
              f"{dict(by_status)}; attempts>1: {sum(r['attempts'] > 1 for r in rows.values())}; "
              f"killed worker held {len(killed_tasks)}, frozen worker held {len(frozen_tasks)} "
              f"({dict(collections.Counter(r['status'] for r in frozen_rows.values()))}); results downloaded "
              f"{downloaded}; webhooks owed {len(owed)}, received {sum(seen.values())}, duplicates {duplicates}; "
              f"client-side failures {dict(client_failures)}")
