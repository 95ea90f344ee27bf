"""End-to-end generation speed per speed switch and memory tier, against diffusers, in one run.

Random weights in the official shapes, built in memory (no download): `--size full` is the real
XL SFT (DiT 4B, Qwen3-Embedding-0.6B, the Oobleck VAE), `--size mid` the quarter-width model
that runs on a CPU. For each configuration of `SpeedOptions` (`CONFIGS`, `--configs`) and each
shape (duration × batch) it times the stages of a text-to-music request -- text encoding,
the DiT steps (CFG: a doubled batch on every step), VAE decode, MP3 encode -- after one warm-up
(which, with compile, is the compilation: reported as `warmup_s`). It prints one JSON line per
configuration and shape as it goes, then a table. diffusers' `AceStepPipeline` runs on the very
same module instances, all switches off (its own eager forward), once per shape, as the reference.
Memory tiers (`--tiers`) run 75 s / batch 1 each and report their peak memory. `--overlap-batches
N` runs N batches of 75 s / batch 1 back to back as the server's worker does, both ways, twice
each in turn (the best of two reported): the VAE decode + MP3 encode of each batch on a finisher
thread (its own CUDA stream) while the next batch samples, and everything in turn
(`decode_beside_sampling` on and off).

FLOPs are counted from the shapes (`dit_flops`), per DiT forward of one batch row with S = ⌈T/2⌉
tokens (T latent frames), L condition tokens, hidden D, query width Q = heads·head_dim, key/value
width K = kv_heads·head_dim, MLP width I, window w, per layer (multiply-add = 2 FLOPs):

    self attention projections   2·S·D·(Q + 2K) + 2·S·Q·D
    self attention               4·S·S'·Q      S' = S (full layers) or min(S, 2w+1) (sliding: the band)
    cross attention projections  2·S·D·Q + 2·L·D·2K + 2·S·Q·D
    cross attention              4·S·L·Q
    MLP (SwiGLU)                 6·S·D·I

plus the patch convs and condition embedder (2·S·2·192·D + 2·S·D·2·64 + 2·L·Denc·D) once. A step
runs 2·B rows with CFG. XL, 75 s, L = 300: 7.9 TFLOP per row-forward, 0.79 PFLOP for 50 CFG steps.
TFLOP/s = DiT FLOPs / DiT seconds; MFU = that / the device's dense bf16 peak (`PEAK_TFLOPS`, or
`--peak-tflops`). tokens/s = DiT tokens (rows × S × steps) per DiT second.

    python bench/gpu.py --size mid --device cpu                 # a few minutes on a CPU
    python bench/gpu.py --size full --device cuda --out results.jsonl   # bench/gpu.sh: ≤ 8 min on one H200
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from generation import CAPTION, LYRICS, build, diffusers_on, sync, time_cantata  # noqa: E402

from cantata.audio.codecs import encode  # noqa: E402
from cantata.models.device import resolve_device, resolve_dtype  # noqa: E402
from cantata.models.speed import SpeedOptions, apply_speed, default_options  # noqa: E402
from cantata.models.speed.memory import apply_tier  # noqa: E402
from cantata.models.vocabulary import MEMORY_TIERS  # noqa: E402
from cantata.models.tiny import dit_config, random_dit  # noqa: E402
from cantata.pipeline import GenerationRequest  # noqa: E402

# Every switch on its own on top of SDPA, then the combinations. Weight transforms and compile
# are one-way: those configurations get a freshly built DiT (same seed, same weights).
CONFIGS = {
    "off": SpeedOptions(),
    "sdpa": SpeedOptions(attention="sdpa"),
    "sdpa+fused": SpeedOptions(attention="sdpa", fused_projections=True),
    "flex+fused": SpeedOptions(attention="flex", fused_projections=True),
    "flex+fused+compile": SpeedOptions(attention="flex", fused_projections=True, compile=True, bucketing=True),
    "flex+fused+compile+graphs": SpeedOptions(attention="flex", fused_projections=True, compile=True, bucketing=True,
                                              cuda_graphs=True),
    "sdpa+fused+int8": SpeedOptions(attention="sdpa", fused_projections=True, quantization="int8"),
    "sdpa+fused+fp8": SpeedOptions(attention="sdpa", fused_projections=True, quantization="fp8"),
}
CPU_CONFIGS = ("off", "sdpa", "sdpa+fused", "flex+fused", "sdpa+fused+int8")
# Dense bf16 tensor-core peaks (TFLOP/s), by a substring of the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0, "L4": 121.0}
# Per size: durations (s), batches, steps.
SIZE_DEFAULTS = {"full": ((75.0, 240.0), (1, 4), 50), "mid": ((30.0,), (1, 4), 2), "tiny": ((10.0,), (1, 2), 4)}


def dit_flops(cfg: dict, frames: int, cond_tokens: int) -> float:
    """FLOPs of one DiT forward of one batch row (see the module docstring)."""
    s = math.ceil(frames / 2)
    d, q = cfg["hidden_size"], cfg["num_attention_heads"] * cfg["head_dim"]
    k, i, w, lc = cfg["num_key_value_heads"] * cfg["head_dim"], cfg["intermediate_size"], cfg["sliding_window"], cond_tokens
    total = 2 * s * 2 * 192 * d + 2 * s * d * 2 * 64 + 2 * lc * cfg["encoder_hidden_size"] * d
    for kind in cfg["layer_types"]:
        seen = s if kind == "full_attention" else min(s, 2 * w + 1)
        total += 2 * s * d * (q + 2 * k) + 2 * s * q * d + 4 * s * seen * q
        total += 2 * s * d * q + 2 * lc * d * 2 * k + 2 * s * q * d + 4 * s * lc * q
        total += 6 * s * d * i
    return float(total)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def requests(duration: float, batch: int, steps: int) -> list[GenerationRequest]:
    """`batch` different requests of one duration (a server's batch: other captions and seeds)."""
    return [GenerationRequest(caption=CAPTION if i == 0 else f"{CAPTION}, take {i + 1}", lyrics=LYRICS,
                              duration=duration, seeds=[42 + i], steps=steps, guidance_scale=7.0)
            for i in range(batch)]


def run_worker_loop(pipe, batches: list[list[GenerationRequest]], beside: bool) -> float:
    """Seconds for `batches` back to back the way `jobs.worker.ModelWorker` runs them: with
    `beside`, each batch's decode + MP3 encode on one finisher thread while the next batch
    samples (one batch in flight at a time); without, all in turn."""
    pipe.decode_beside_sampling = beside
    dev = pipe.device

    def finish(items) -> None:
        for item in items:
            for audio in pipe.decode(item).audio:
                encode(audio.numpy(), 48000, "MP3", bitrate_kbps=192)

    sync(dev)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(1) as finisher:
        pending = None
        for reqs in batches:
            items = pipe.sample_batch(reqs)
            if dev.type == "cuda":
                torch.cuda.current_stream(dev).synchronize()
            if not beside:
                finish(items)
                continue
            if pending is not None:
                pending.result()
            pending = finisher.submit(finish, items)
        if pending is not None:
            pending.result()
    sync(dev)
    return time.perf_counter() - t0


def run_diffusers(pipe, reqs, device) -> float:
    theirs = diffusers_on(pipe)
    r = reqs[0]
    call = dict(prompt=[q.caption for q in reqs], lyrics=[q.lyrics for q in reqs], audio_duration=r.duration,
                num_inference_steps=r.steps, guidance_scale=r.guidance_scale, shift=3.0, output_type="pt",
                generator=[torch.Generator(device).manual_seed(q.seeds[0]) for q in reqs])
    theirs(**{**call, "num_inference_steps": 1})  # warm-up
    sync(device)
    t0 = time.perf_counter()
    out = theirs(**call)
    for a in out.audios if hasattr(out, "audios") else out[0]:
        encode(a.float().cpu().numpy(), 48000, "MP3", bitrate_kbps=192)
    sync(device)
    return time.perf_counter() - t0


def fresh_dit(pipe, args, device, dtype) -> None:
    """Replace the pipeline's DiT by a newly built one with the same weights (seed 0)."""
    pipe.dit = None
    pipe.conditioner.condition_encoder = None
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch.manual_seed(0)
    dit = random_dit(dit_config(args.variant, args.size), device=device, dtype=dtype)
    pipe.dit = dit
    pipe.conditioner.condition_encoder = dit.condition_encoder


def row(config: str, duration: float, batch: int, steps: int, stages: dict, warmup: float, flops_row: float,
        frames: int, device, peak_tflops: float | None, rel_l2: float | None, options: dict | None) -> dict:
    dit_flops_total = flops_row * 2 * batch * steps  # CFG on every step
    tflops = dit_flops_total / stages["dit"] / 1e12
    return {"config": config, "options": options, "duration_s": duration, "batch": batch, "steps": steps,
            "stages_s": {k: round(v, 4) for k, v in stages.items()}, "warmup_s": round(warmup, 2),
            "tokens_per_s": round(2 * batch * math.ceil(frames / 2) * steps / stages["dit"], 1),
            "dit_tflops": round(dit_flops_total / 1e12, 2), "tflop_per_s": round(tflops, 2),
            "mfu": None if not peak_tflops else round(tflops / peak_tflops, 4),
            "peak_mem_gib": peak_gib(device), "latents_rel_l2_vs_off": rel_l2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="xl-sft")
    ap.add_argument("--size", choices=tuple(SIZE_DEFAULTS), default="full")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--durations", type=float, nargs="+")
    ap.add_argument("--batches", type=int, nargs="+")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--long-batch1-only", action="store_true", help="the longest duration only at batch 1 (time budget)")
    ap.add_argument("--configs", nargs="*", help=f"default: all on CUDA, {' '.join(CPU_CONFIGS)} on CPU; "
                    "quantized ones report their rel L2 against 'off' when it runs before them")
    ap.add_argument("--tiers", nargs="*", default=None, help=f"memory tiers to run (default: all on CUDA, none on CPU): {' '.join(MEMORY_TIERS)}")
    ap.add_argument("--overlap-batches", type=int, default=0, help="time N batches as the worker runs them, "
                    "decode beside sampling on and off (default 0: not run)")
    ap.add_argument("--no-diffusers", action="store_true")
    ap.add_argument("--peak-tflops", type=float)
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--out", help="also append the JSON lines to this file")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(device, args.dtype)
    durations, batches, steps = SIZE_DEFAULTS[args.size]
    durations, batches, steps = args.durations or durations, args.batches or batches, args.steps or steps
    configs = args.configs if args.configs is not None else (list(CONFIGS) if device.type == "cuda" else list(CPU_CONFIGS))
    tiers = args.tiers if args.tiers is not None else (list(MEMORY_TIERS) if device.type == "cuda" else [])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    shapes = [(d, b) for d in durations for b in batches
              if not (args.long_batch1_only and d == max(durations) and len(durations) > 1 and b > 1)]
    header = {"device": name, "dtype": str(dtype).split(".")[-1], "torch": torch.__version__, "size": args.size,
              "variant": args.variant, "date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads()}
    out = open(args.out, "a") if args.out else None

    def emit(record: dict) -> None:
        line = json.dumps({**header, **record})
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    pipe = build(args.variant, args.size, device, dtype)
    cfg = dit_config(args.variant, args.size)
    results, reference = [], {}
    with torch.no_grad():
        if not args.no_diffusers:
            for d, b in shapes:
                seconds = run_diffusers(pipe, requests(d, b, steps), device)
                results.append({"config": "diffusers", "duration_s": d, "batch": b, "stages_s": {"total": round(seconds, 4)}})
                emit(results[-1])
        for config in configs:
            options = CONFIGS[config]
            one_way = options.compile or options.quantization != "none"
            try:
                if one_way:
                    fresh_dit(pipe, args, device, dtype)
                apply_speed(pipe.dit.transformer, options)
                for d, b in shapes:
                    reqs = requests(d, b, steps)
                    t0 = time.perf_counter()
                    time_cantata(pipe, requests(d, b, 1 if not options.compile else steps), mp3=True)  # warm-up / compile
                    warmup = time.perf_counter() - t0
                    reset_peak(device)
                    stages, latents, cond = time_cantata(pipe, reqs, mp3=True)
                    frames = round(d * 25)
                    if config == "off":
                        reference[(d, b)] = latents
                    ref = reference.get((d, b))
                    rel = None if ref is None else round(float((latents - ref).norm() / ref.norm()), 6)
                    results.append(row(config, d, b, steps, stages, warmup, dit_flops(cfg, frames, cond), frames, device,
                                       peak, rel, asdict(options)))
                    emit(results[-1])
            except Exception as e:  # noqa: BLE001 -- one configuration failing must not hide the others
                results.append({"config": config, "error": f"{type(e).__name__}: {e}"[:300]})
                emit(results[-1])
            if one_way:
                fresh_dit(pipe, args, device, dtype)
        for tier in tiers:
            try:
                fresh_dit(pipe, args, device, dtype)
                pipe.residency = type(pipe.residency)(device)
                apply_tier(pipe, tier)
                reset_peak(device)
                d = min(durations, key=lambda x: abs(x - 75))
                stages, _, cond = time_cantata(pipe, requests(d, 1, steps), mp3=True)
                results.append(row(f"tier:{tier}", d, 1, steps, stages, 0.0, dit_flops(cfg, round(d * 25), cond),
                                   round(d * 25), device, peak, None, None))
            except Exception as e:  # noqa: BLE001
                results.append({"config": f"tier:{tier}", "error": f"{type(e).__name__}: {e}"[:300]})
            emit(results[-1])
            if device.type == "cuda":
                pipe.vae.to(device), pipe.conditioner.text_encoder.to(device)
        if args.overlap_batches:
            fresh_dit(pipe, args, device, dtype)
            pipe.residency = type(pipe.residency)(device)
            apply_speed(pipe.dit.transformer, default_options(device))
            d = min(durations, key=lambda x: abs(x - 75))
            batches = [requests(d, 1, steps) for _ in range(args.overlap_batches)]
            run_worker_loop(pipe, batches[:1], beside=True)  # warm-up (the finisher thread too)
            runs = {True: [], False: []}
            for beside in (True, False, True, False):  # alternating: neither gets the warmer machine
                runs[beside].append(round(run_worker_loop(pipe, batches, beside), 4))
            for beside, seconds in runs.items():
                results.append({"config": f"worker:decode-{'beside' if beside else 'between'}", "duration_s": d,
                                "batch": 1, "batches": len(batches), "steps": steps, "seconds": min(seconds),
                                "runs_s": seconds})
                emit(results[-1])
    print_table(results, header)


def print_table(results: list[dict], header: dict) -> None:
    base = {(r["duration_s"], r["batch"]): r["stages_s"]["total"] for r in results if r.get("config") == "diffusers"}
    print(f"\n{header['variant']} ({header['size']}) on {header['device']} {header['dtype']}, torch {header['torch']}, {header['date']}")
    print("| config | s | batch | text | DiT | VAE | MP3 | total | diffusers/ours | tokens/s | TFLOP/s | MFU | peak GiB | rel L2 vs off | warm-up s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if r.get("config", "").startswith("worker:"):
            continue
        if "error" in r:
            print(f"| {r['config']} | error: {r['error'][:80]} |")
            continue
        s = r["stages_s"]
        if r["config"] == "diffusers":
            print(f"| diffusers | {r['duration_s']:g} | {r['batch']} | | | | | {s['total']:.3f} | 1.00 | | | | | | |")
            continue
        ref = base.get((r["duration_s"], r["batch"]))
        ratio = f"{ref / s['total']:.2f}" if ref else ""
        fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
        print(f"| {r['config']} | {r['duration_s']:g} | {r['batch']} | {s['text']:.3f} | {s['dit']:.3f} | {s['vae']:.3f} | "
              f"{s['mp3']:.3f} | {s['total']:.3f} | {ratio} | {r['tokens_per_s']:.0f} | {r['tflop_per_s']:.2f} | "
              f"{fmt(r['mfu'], '.1%')} | {fmt(r['peak_mem_gib'], '.2f')} | {fmt(r['latents_rel_l2_vs_off'], '.2e')} | {r['warmup_s']:.1f} |")
    loops = {r["config"]: r for r in results if r.get("config", "").startswith("worker:") and "seconds" in r}
    if loops:
        print("\n| worker loop | s | batches | steps | seconds | between/beside |")
        print("|---|---:|---:|---:|---:|---:|")
        between = loops.get("worker:decode-between", {}).get("seconds")
        for name, r in loops.items():
            ratio = f"{between / r['seconds']:.2f}" if between else ""
            print(f"| {name[7:]} | {r['duration_s']:g} | {r['batches']} | {r['steps']} | {r['seconds']:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
