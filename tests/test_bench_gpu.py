"""`bench/gpu.py` runs end to end on the CPU with tiny shapes: the script `bench/gpu.sh` runs on a
lent GPU must not be the first to find it broken (a lent machine's minutes are few)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_part_of_the_gpu_benchmark_runs_on_tiny_shapes(tmp_path):
    out = tmp_path / "results.jsonl"
    cmd = [sys.executable, "bench/gpu.py", "--size", "tiny", "--device", "cpu", "--durations", "10", "--batches", "1",
           "--steps", "2", "--configs", "off", "sdpa+fused+int8", "--tiers", "balanced", "--overlap-batches", "2",
           "--threads", "1", "--out", str(out)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["config"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"diffusers", "off", "sdpa+fused+int8", "tier:balanced", "worker:decode-beside",
                         "worker:decode-between"}
    assert not [name for name, r in rows.items() if "error" in r]
    assert rows["off"]["latents_rel_l2_vs_off"] == 0.0
    assert 0 < rows["sdpa+fused+int8"]["latents_rel_l2_vs_off"] < 5e-2  # INT8 moves the song a little
    assert rows["off"]["tokens_per_s"] > 0 and rows["off"]["stages_s"]["dit"] > 0  # (tiny: 0.00 TFLOP)
    assert all(rows[f"worker:decode-{m}"]["seconds"] > 0 for m in ("beside", "between"))
    table = run.stdout[run.stdout.index("| config |"):]
    assert "| off | 10 | 1 |" in table and "| decode-beside | 10 | 2 | 2 |" in table
