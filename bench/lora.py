"""Eight requests with eight different adapters: one DiT batch vs one request after another.

The pipeline (random weights in the official shapes: tiny, mid or full; see generation.py) gets
eight random rank-`--rank` LoRA adapters on the attention projections the official trainer targets
(q/k/v/o of self- and cross-attention, lora.md §1). Eight requests differing only in their
adapter run once as one `generate_batch` (the base matmuls once for all rows, each adapter's
low-rank update on its own rows) and once one after the other, in the same process, warmed up
first and interleaved over `--repeats`; the ratio is sequential / batched wall time (> 1 means
batching pays). The batched latents are checked against the sequential ones (fp32: within 1e-4).

    python bench/lora.py --size tiny --steps 8
    python bench/lora.py --size mid --duration 30 --steps 8 --requests 8
    python bench/lora.py --size full --duration 60 --steps 50 --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from cantata.models.adapters import Adapter
from cantata.models.adapters.deltas import LowRank
from cantata.models.device import resolve_device, resolve_dtype
from cantata.pipeline import CantataPipeline, GenerationRequest
from generation import CAPTION, build, sync

TARGETS = ("self_attn.to_q", "self_attn.to_k", "self_attn.to_v", "self_attn.to_out.0",
           "cross_attn.to_q", "cross_attn.to_k", "cross_attn.to_v", "cross_attn.to_out.0")


def random_adapter(pipe: CantataPipeline, name: str, rank: int, seed: int) -> Adapter:
    """A LoRA with rank `rank` and alpha 2·rank on every attention projection of the decoder."""
    gen = torch.Generator().manual_seed(seed)
    deltas = {}
    for path, module in pipe.dit.transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and path.endswith(TARGETS):
            out_features, in_features = module.weight.shape
            down = torch.randn(rank, in_features, generator=gen) / in_features ** 0.5
            up = torch.randn(out_features, rank, generator=gen) * 0.02
            deltas[path] = LowRank(down, up, scale=2.0)
    return Adapter(name, "lora", "random", deltas).to(pipe.device, pipe.dtype)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="xl-sft")
    ap.add_argument("--size", choices=("tiny", "mid", "full"), default="tiny")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--requests", type=int, default=8, help="requests, each with its own adapter")
    ap.add_argument("--rank", type=int, default=64, help="LoRA rank (the official trainer's default is 64)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args = ap.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_dtype(device, args.dtype)
    pipe = build(args.variant, args.size, device, dtype)
    adapters = [random_adapter(pipe, f"adapter-{i}", args.rank, seed=i) for i in range(args.requests)]
    reqs = [GenerationRequest(caption=CAPTION, duration=args.duration, seeds=[i], steps=args.steps,
                              adapters=[(adapter, 1.0)]) for i, adapter in enumerate(adapters)]

    def batched():
        results = pipe.generate_batch(reqs)
        sync(device)
        return results

    def sequential():
        results = [pipe.generate(r) for r in reqs]
        sync(device)
        return results

    batched(), sequential()  # warm-up
    runs: dict[str, list[float]] = {"batched": [], "sequential": []}
    for _ in range(args.repeats):
        seconds, together = timed(batched)
        runs["batched"].append(seconds)
        seconds, alone = timed(sequential)
        runs["sequential"].append(seconds)
    worst = max(((a.latents.double() - b.latents.double()).abs().max() / b.latents.double().abs().max()).item()
                for a, b in zip(together, alone))
    batch_s, seq_s = statistics.median(runs["batched"]), statistics.median(runs["sequential"])
    report = {"variant": args.variant, "size": args.size, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
              "requests": args.requests, "rank": args.rank, "steps": args.steps, "duration": args.duration,
              "batched_s": round(batch_s, 3), "sequential_s": round(seq_s, 3),
              "ratio": round(seq_s / batch_s, 2), "max_abs_rel_diff": worst}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.requests} requests, {args.requests} different rank-{args.rank} adapters, {args.variant} "
          f"{args.size}, {args.duration:g} s, {args.steps} steps, {device} {report['dtype']}")
    print(f"  one batch          {batch_s:8.3f} s")
    print(f"  one after another  {seq_s:8.3f} s")
    print(f"  ratio              {seq_s / batch_s:8.2f}x  (batched latents vs alone: max-abs-rel {worst:.1e})")


if __name__ == "__main__":
    main()
