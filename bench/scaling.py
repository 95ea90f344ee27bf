"""Scale-out throughput: one queue of mixed requests drained by 1, 2, 3 … worker processes on a
shared store, in the same run (README "Scaling out").

For each worker count k, a fresh deployment is started from the test suite's `clusterkit`: one
API-only node (`cantata serve --no-worker`) and k `cantata worker` processes on one store (a
SQLite file by default, or `--store postgresql://…`, each count in a fresh database you give),
all on demo checkpoints (`--size tiny` or `mid`, written once). Once every worker has loaded its
model, `--tasks` async requests are sent at once (numberResults 1-3 in turn, MP3 and WAV, several
captions and seeds, so the claims make batches of different shapes), and the run ends when the
store shows every task finished. Reported per k:

* tasks/s and results/s over the drain (first submission to the last `finished_at`), and the
  ratio to one worker;
* claim latency: `started_at - created_at` of each task, read from the store: the minimum (the
  first claim, made by an idle worker: the cost of a claim itself, polling and wake-up included)
  and the median and p90 (mostly the queue ahead of a task: they fall as workers are added).

    python bench/scaling.py                                        # CPU, tiny, 1/2/3 workers
    python bench/scaling.py --workers 1,2,4,8 --devices cuda:0,cuda:1,cuda:2,cuda:3,cuda:4,cuda:5,cuda:6,cuda:7 \\
        --size mid --tasks 96 --steps 8 --duration 60            # one worker per GPU on a lent machine

With `--devices`, the run with k workers gives worker i the device i; without it every worker
runs on `--device` (default cpu) with one torch thread each, so on a machine with fewer free cores
than workers the ratio is capped by the cores, not by the claims.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from clusterkit import Cluster  # noqa: E402  (the tests' process helpers)
from serverkit import task, wait_for  # noqa: E402

CAPTIONS = ("lo-fi hip hop, dusty drums", "uk garage, choir", "ambient drone, slow pads", "surf rock, spring reverb")


def mixed_requests(count: int, steps: int, duration: float) -> list[dict]:
    out = []
    for i in range(count):
        fields = {"outputFormat": "WAV"} if i % 4 == 3 else {"outputFormat": "MP3"}
        out.append(task(positivePrompt=CAPTIONS[i % len(CAPTIONS)], numberResults=1 + i % 3, steps=steps,
                        duration=duration, deliveryMethod="async", seed=1000 + i, **fields))
    return out


def read_times(store: str, uuids: list[str]) -> list[tuple[str, float, float | None, float | None]]:
    """(status, created_at, started_at, finished_at) of each task, straight from the store."""
    query = "SELECT status, created_at, started_at, finished_at FROM tasks WHERE uuid IN ({})"
    if store.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(store) as conn:
            return conn.execute(query.format(",".join(["%s"] * len(uuids))), uuids).fetchall()
    import sqlite3

    with sqlite3.connect(store) as conn:
        return conn.execute(query.format(",".join("?" * len(uuids))), uuids).fetchall()


def run_with(workers: int, args, checkpoints: Path, root: Path) -> dict:
    data = root / f"workers-{workers}" / "data"
    store = args.store or str(data / "cantata.db")
    with Cluster(checkpoints, data, store=args.store, serve_flags=(), worker_flags=("--max-batch-size",
                                                                                   str(args.max_batch_size))) as c:
        api = c.api()
        nodes = [c.worker(device=args.devices[i] if args.devices else args.device) for i in range(workers)]
        for node in nodes:
            node.wait_loaded(300)
        requests = mixed_requests(args.tasks, args.steps, args.duration)
        uuids = [r["taskUUID"] for r in requests]
        start = time.time()
        resp = api.post(requests, timeout=120)
        assert resp.status_code == 200, resp.text[:500]

        def finished():
            rows = read_times(store, uuids)
            return rows if len(rows) == len(uuids) and all(r[3] is not None for r in rows) else None

        rows = wait_for(finished, 3600, f"{args.tasks} tasks with {workers} workers", interval=0.25)
    statuses = sorted({r[0] for r in rows})
    drain = max(r[3] for r in rows) - start
    waits = sorted(r[2] - r[1] for r in rows if r[2] is not None)
    results = sum(r["numberResults"] for r in requests)
    return {"workers": workers, "statuses": statuses, "seconds": round(drain, 2),
            "tasks_per_s": round(len(rows) / drain, 3), "results_per_s": round(results / drain, 3),
            "claim_latency_min_s": round(waits[0], 2),
            "claim_latency_median_s": round(statistics.median(waits), 2),
            "claim_latency_p90_s": round(waits[int(0.9 * (len(waits) - 1))], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="1,2,3", help="worker counts to run, in order (default 1,2,3)")
    p.add_argument("--tasks", type=int, default=18, help="requests in the queue (default 18: 36 results)")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of audio per result (30 is the minimum)")
    p.add_argument("--size", choices=("tiny", "mid"), default="tiny", help="demo checkpoint size")
    p.add_argument("--device", default="cpu", help="every worker's device when --devices is not given")
    p.add_argument("--devices", type=lambda s: s.split(","), help="worker i runs on device i (one per GPU)")
    p.add_argument("--store", help="postgresql://… (default: a SQLite file per run)")
    p.add_argument("--max-batch-size", type=int, default=4)
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args()
    counts = [int(k) for k in args.workers.split(",")]
    if args.devices and max(counts) > len(args.devices):
        p.error("--devices names fewer devices than the largest worker count")

    import torch

    from cantata.models.tiny import write_tiny_checkpoint

    with tempfile.TemporaryDirectory(prefix="cantata-scaling-") as tmp:
        root = Path(tmp)
        checkpoints = root / "checkpoints"
        write_tiny_checkpoint(checkpoints, ["xl-sft"], size=args.size)
        runs = [run_with(k, args, checkpoints, root) for k in counts]
    base = runs[0]["tasks_per_s"]
    for run in runs:
        run["ratio_vs_first"] = round(run["tasks_per_s"] / base, 2)
    report = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "torch": torch.__version__,
              "cpu_count": __import__("os").cpu_count(), "device": ",".join(args.devices) if args.devices
              else args.device, "store": "postgresql" if args.store else "sqlite", "size": args.size,
              "tasks": args.tasks, "steps": args.steps, "duration": args.duration, "runs": runs}
    print(json.dumps(report, indent=2))
    print("\n| workers | seconds | tasks/s | results/s | ratio | claim latency min / median / p90 (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(f"| {r['workers']} | {r['seconds']} | {r['tasks_per_s']} | {r['results_per_s']} | "
              f"{r['ratio_vs_first']} | {r['claim_latency_min_s']} / {r['claim_latency_median_s']} / "
              f"{r['claim_latency_p90_s']} |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
