"""Time the 5 Hz LM planner: tokens/s, batched vs one request at a time, against a plain reference
loop on the same weights, and the planner's share of a whole song.

Weights are random, in memory (no checkpoint files): a Qwen3 causal LM with the real 217 204-token
planner vocabulary and tokenizer (`--size mid`: 256 wide, 4 layers, so that the 217 204-row output
layer, which dominates a CPU step, keeps a default run near 3 minutes on 2 cores; `full`: the
official 1.7B's shape), and the DiT/text encoder/VAE of `bench/generation.py` at the same size. Every request is
a `thinking` text-to-music request of `--duration` seconds with bpm/key/time signature missing,
so each runs the metadata phase (caption not rewritten: the server default) and then the codes
phase, `int(5·duration)` codes with CFG 2.0 (temperature 0.85, top-p 0.9, seeded).

Three ways of planning the same `--requests` requests are timed, interleaved, median of `--repeats`:

* **batched** — `Planner.plan(all requests)`: the metadata phases as one batch, then the codes
  phases as one batch, each request with its CFG pair (Cantata's planning stage);
* **one at a time** — `Planner.plan([request])` for each request in turn;
* **reference** — a straightforward `generate`-style loop, one request at a time, that stands in
  for the official PyTorch backend's loop (we cannot ship the official code): the full
  `Qwen3ForCausalLM` forward with its default position handling, logits for every prompt position
  at prefill, the CFG pair as a batch of two, and the very same logits processing (the metadata
  state machine, CFG, repetition penalty, top-k/top-p, draw) as Cantata's `decode`. With the
  same seeds it writes the same tokens (the JSON says whether it did).

The end-to-end row times one request through `CantataPipeline.generate_batch` with the planner
attached (planning, text encoding, `--steps` DiT steps, VAE decode) and reports the planner's share.

    python bench/planner.py                                    # CPU, mid size, 75 s, 4 requests
    python bench/planner.py --device cuda --dtype bf16 --size full --steps 50 --repeats 3   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation import CAPTION, LYRICS, build, sync  # noqa: E402  (the DiT side of the same benchmark)

from cantata.models.device import resolve_device, resolve_dtype  # noqa: E402
from cantata.pipeline import GenerationRequest  # noqa: E402
from cantata.planner import Planner, PlanRequest, SamplingSettings  # noqa: E402
from cantata.planner.decode import Item, Trace, _pick, left_pad  # noqa: E402
from cantata.planner.parse import parse_metadata  # noqa: E402
from cantata.planner.tiny import TINY_PLANNER_CONFIG, write_tiny_planner  # noqa: E402
from cantata.planner.tokenizer import PlannerTokenizer  # noqa: E402

#: Widths of the random planner: mid keeps a real-vocabulary LM small enough for a CPU; full is
#: the official 1.7B's config.
PLANNER_SIZES = {
    "mid": {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 64},
    "full": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128},
}


def build_planner(size: str, device: torch.device, dtype: torch.dtype) -> Planner:
    """A random planner of `size` with the real tokenizer (written once to a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = PlannerTokenizer.from_dir(write_tiny_planner(Path(tmp), "1.7B"))
    torch.manual_seed(0)
    config = Qwen3Config.from_dict({**TINY_PLANNER_CONFIG, **PLANNER_SIZES[size]})
    model = Qwen3ForCausalLM(config).to(device=device, dtype=dtype).eval()
    return Planner(model, tokenizer)


def asks(n: int, duration: float) -> list[PlanRequest]:
    return [PlanRequest(caption=CAPTION if i == 0 else f"{CAPTION}, take {i + 1} with strings", lyrics=LYRICS,
                        duration=duration, thinking=True, use_cot_caption=False, sampling=SamplingSettings(),
                        seeds=[42 + i]) for i in range(n)]


def tokens_of(plans) -> int:
    return sum(len(trace.tokens) for plan in plans for trace in plan.traces.values())


# -- the reference loop ----------------------------------------------------------------------------


@torch.inference_mode()
def reference_decode(model, item: Item, eos_id: int, pad_id: int) -> list[int]:
    """One item, `generate`-style: full causal-LM forwards, the CFG pair as a batch of two."""
    rows = [item.prompt] + ([item.uncond_prompt] if item.uncond_prompt is not None else [])
    ids, mask = left_pad(rows, pad_id)
    ids, mask = ids.to(model.device), mask.to(model.device)
    seen, trace, cache, inputs = torch.tensor(item.prompt), Trace(), None, ids
    while True:
        out = model(input_ids=inputs, attention_mask=mask, cache=cache, use_cache=True)
        cache = out.cache
        logits = out.logits[:, -1].float()
        scores = (logits[1] + item.settings.cfg_scale * (logits[0] - logits[1]) if len(rows) == 2
                  else logits[0].clone())
        token = _pick(item, scores, seen, trace, False)
        item.fsm.advance(token)
        trace.tokens.append(token)
        seen = torch.cat([seen, torch.tensor([token])])
        if token in (eos_id, pad_id) or len(trace.tokens) >= item.max_new_tokens:
            return trace.tokens
        inputs = torch.full((len(rows), 1), token, dtype=torch.long, device=model.device)
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=mask.device)], dim=1)


def reference_plan(planner: Planner, ask: PlanRequest) -> list[list[int]]:
    """The metadata phase, then the codes phase, of one request (the prompts and state machines are
    the planner's own, so only the loop differs)."""
    tok, gen = planner.tokenizer, torch.Generator(device=planner.model.device).manual_seed(ask.seeds[0])
    cot = reference_decode(planner.model, planner._cot_item(ask, gen), tok.eos_id, tok.pad_id)
    codes = reference_decode(planner.model, planner._codes_item(ask, parse_metadata(tok.decode(cot)), gen),
                             tok.eos_id, tok.pad_id)
    return [cot, codes]


# -- timing ----------------------------------------------------------------------------------------


def timed(fn, device: torch.device):
    sync(device)
    t0 = time.perf_counter()
    value = fn()
    sync(device)
    return time.perf_counter() - t0, value


def end_to_end(pipe, planner: Planner, duration: float, steps: int, device: torch.device) -> dict[str, float]:
    """One thinking request through `generate_batch`, the planner's part timed inside it."""
    spent = []

    class TimedPlanner:
        def __getattr__(self, name):
            return getattr(planner, name)

        def plan(self, requests, **kw):
            seconds, plans = timed(lambda: planner.plan(requests, **kw), device)
            spent.append(seconds)
            return plans

    pipe.planner = TimedPlanner()
    request = GenerationRequest(caption=CAPTION, lyrics=LYRICS, duration=duration, seeds=[42], steps=steps,
                                thinking=True)
    total, _ = timed(lambda: pipe.generate_batch([request]), device)
    return {"planner": spent[0], "total": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=tuple(PLANNER_SIZES), default="mid")
    ap.add_argument("--variant", default="xl-sft")
    ap.add_argument("--duration", type=float, default=75.0)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8, help="DiT steps of the end-to-end row")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: per-token work on a shared box is fastest on one)")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    dtype = resolve_dtype(device, args.dtype)
    planner = build_planner(args.size, device, dtype)
    pipe = build(args.variant, args.size, device, dtype)
    work = asks(args.requests, args.duration)

    planner.plan(asks(1, 10.0))  # warm-up (kernels, allocator)
    runs: dict[str, list[float]] = {"batched": [], "one_at_a_time": [], "reference": []}
    for _ in range(args.repeats):  # interleaved, so drift on the machine hits all alike
        seconds, batched = timed(lambda: planner.plan(asks(args.requests, args.duration)), device)
        runs["batched"].append(seconds)
        seconds, singles = timed(lambda: [planner.plan([a])[0] for a in asks(args.requests, args.duration)], device)
        runs["one_at_a_time"].append(seconds)
        seconds, reference = timed(lambda: [reference_plan(planner, a) for a in work], device)
        runs["reference"].append(seconds)
    tokens = tokens_of(batched)
    same = all([trace.tokens for trace in plan.traces.values()] == ref for plan, ref in zip(singles, reference))
    e2e = end_to_end(pipe, planner, args.duration, args.steps, device)
    median = {k: statistics.median(v) for k, v in runs.items()}
    report = {
        "bench": "planner", "size": args.size, "variant": args.variant, "requests": args.requests,
        "duration_s": args.duration, "tokens": tokens, "device": str(device), "dtype": str(dtype).split(".")[-1],
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "seconds": {k: round(v, 3) for k, v in median.items()},
        "tokens_per_s": {k: round(tokens / v, 1) for k, v in median.items()},
        "speedup_batched_over_reference": round(median["reference"] / median["batched"], 2),
        "speedup_one_at_a_time_over_reference": round(median["reference"] / median["one_at_a_time"], 2),
        "reference_tokens_match": same,
        "end_to_end": {"steps": args.steps, "planner_s": round(e2e["planner"], 3), "total_s": round(e2e["total"], 3),
                       "planner_share": round(e2e["planner"] / e2e["total"], 3)},
    }
    if not args.json:
        print(f"planner ({args.size}, random weights, real vocabulary) on {report['device_name']} {report['dtype']}, "
              f"{args.requests} thinking requests of {args.duration:g} s, {tokens} tokens, median of {args.repeats}")
        print(f"  {'loop':<26}{'seconds':>10}{'tokens/s':>10}")
        for name, label in (("batched", "cantata, batched"), ("one_at_a_time", "cantata, one at a time"),
                            ("reference", "reference loop, one at a time")):
            print(f"  {label:<26}{median[name]:>10.2f}{tokens / median[name]:>10.1f}")
        print(f"  reference writes the same tokens: {same}")
        print(f"  one {args.duration:g} s song end to end ({args.steps} DiT steps): {e2e['total']:.2f} s, "
              f"planner {e2e['planner']:.2f} s = {100 * e2e['planner'] / e2e['total']:.1f} %")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
