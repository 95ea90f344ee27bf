"""Time generations with Cantata and with diffusers' `AceStepPipeline` on the same weights.

Both pipelines share the very same module instances (random weights in the official shapes:
tiny, mid, or the full XL/2B sizes), run the same number of steps with guidance on, for the same
durations, in the same process; each is warmed up once, then timed over `--repeats` runs,
interleaved. Cantata is reported per stage (text encoding, DiT steps, VAE decode); the ratio is
total wall time, diffusers / Cantata (> 1 means Cantata is faster).

With `--requests N` the workload is N different requests (other captions, durations growing by
10 % each), as a server sees them: Cantata runs them as one padded DiT batch (`generate_batch`),
diffusers one after the other (it has no cross-request batching).

    python bench/generation.py --variant xl-sft --size mid --duration 30 --steps 8
    python bench/generation.py --variant xl-sft --size mid --duration 30 --steps 8 --requests 4
    python bench/generation.py --variant xl-sft --size full --duration 75 --steps 50 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from diffusers import AceStepPipeline, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

from cantata.audio.codecs import encode
from cantata.models.device import resolve_device, resolve_dtype
from cantata.models.tiny import dit_config, qwen_tokenizer_dir, random_dit, text_encoder_config, vae_config
from cantata.models.variants import get_variant, sampling_params
from cantata.pipeline import CantataPipeline, GenerationRequest
from cantata.pipeline.decode import decode_latents
from cantata.pipeline.latents import seeded_noise
from cantata.pipeline.sampler import sample

CAPTION = "Warm lo-fi hip hop with dusty vinyl crackle, mellow Rhodes chords, soft female vocals"
LYRICS = "[Verse]\nCity lights are fading slow\nCoffee steam and radio\n\n[Chorus]\nHold on, hold on\nTill the morning comes"


def build(variant: str, size: str, device: torch.device, dtype: torch.dtype) -> CantataPipeline:
    """Random weights in memory (no multi-GB files), wrapped in Cantata's pipeline."""
    torch.manual_seed(0)
    dit = random_dit(dit_config(variant, size), device=device, dtype=dtype)
    text_cfg = {k: v for k, v in text_encoder_config(size).items() if k not in ("architectures", "transformers_version")}
    text = Qwen3Model(Qwen3Config(**text_cfg)).to(device=device, dtype=dtype).eval()
    vae_kwargs = {k: v for k, v in vae_config(size).items()}
    vae = AutoencoderOobleck(**vae_kwargs).to(device=device, dtype=dtype).eval()
    tok = AutoTokenizer.from_pretrained(qwen_tokenizer_dir())
    return CantataPipeline(get_variant(variant), dit, text, tok, vae)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_cantata(pipe: CantataPipeline, reqs: list[GenerationRequest], *,
                 mp3: bool = False) -> tuple[dict[str, float], torch.Tensor, int]:
    """Stage seconds, the final latents and the condition tokens of one run: what `generate_batch`
    does (minus its checks), each stage timed; with `mp3`, the MP3 encode of every result too."""
    dev = pipe.device
    sync(dev)
    t0 = time.perf_counter()
    preps = [pipe.prepare(r) for r in reqs]
    sync(dev)
    t1 = time.perf_counter()
    plan, noise = pipe.plan_batch(preps)
    latents = sample(pipe.dit.transformer, noise, noise, plan)
    sync(dev)
    t2 = time.perf_counter()
    audio, row = [], 0
    for prep in preps:
        with pipe.residency.using(pipe.vae):
            audio.extend(decode_latents(pipe.vae, latents[row:row + len(prep.seeds), :prep.frames])[:, :, :prep.samples])
        row += len(prep.seeds)
    sync(dev)
    t3 = time.perf_counter()
    stages = {"text": t1 - t0, "dit": t2 - t1, "vae": t3 - t2}
    if mp3:
        for a in audio:
            encode(a.numpy(), 48000, "MP3", bitrate_kbps=192)
        stages["mp3"] = time.perf_counter() - t3
    stages["total"] = time.perf_counter() - t0
    return stages, latents.float().cpu(), preps[0].plan.phases[0].cond.shape[1]


def diffusers_on(ours: CantataPipeline) -> AceStepPipeline:
    """diffusers' pipeline on the very same module instances as `ours`."""
    theirs = AceStepPipeline(
        vae=ours.vae, text_encoder=ours.conditioner.text_encoder, tokenizer=ours.conditioner.tokenizer,
        transformer=ours.dit.transformer, condition_encoder=ours.dit.condition_encoder,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
        audio_tokenizer=ours.dit.audio_tokenizer, audio_token_detokenizer=ours.dit.detokenizer,
    )
    theirs.set_progress_bar_config(disable=True)
    return theirs


def time_diffusers(pipe: AceStepPipeline, reqs: list[GenerationRequest], device: torch.device) -> dict[str, float]:
    sync(device)
    t0 = time.perf_counter()
    for req in reqs:
        pipe(prompt=req.caption, lyrics=req.lyrics, audio_duration=req.duration, vocal_language=req.language,
             num_inference_steps=req.steps, guidance_scale=req.guidance_scale, shift=3.0,
             cfg_interval_start=1.0 - req.cfg_interval[1], cfg_interval_end=1.0 - req.cfg_interval[0],
             generator=torch.Generator(device).manual_seed(req.seeds[0]), output_type="pt")
    sync(device)
    return {"total": time.perf_counter() - t0}


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="xl-sft")
    ap.add_argument("--size", choices=("tiny", "mid", "full"), default="tiny")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--steps", type=int, default=None, help="default: the variant's (50 for SFT)")
    ap.add_argument("--guidance-scale", type=float, default=7.0)
    ap.add_argument("--cfg-interval", default="0:1", help="START:END in t (both pipelines get the same interval)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", type=int, default=1, help="different requests served together (see above)")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args = ap.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_dtype(device, args.dtype)
    lo, hi = (float(x) for x in args.cfg_interval.split(":"))
    variant = get_variant(args.variant)
    ours = build(variant.name, args.size, device, dtype)
    sampling = sampling_params(variant, steps=args.steps, guidance_scale=args.guidance_scale)
    scale = sampling.guidance_scale if sampling.guided else 1.0  # diffusers' spelling of "no guidance"
    reqs = [GenerationRequest(caption=CAPTION if i == 0 else f"{CAPTION}, take {i + 1} with strings",
                              lyrics=LYRICS, duration=round(args.duration * 1.1**i, 1), seeds=[42 + i],
                              steps=sampling.steps, guidance_scale=scale, cfg_interval=(lo, hi))
            for i in range(args.requests)]
    req = reqs[0]
    theirs = diffusers_on(ours)

    with torch.no_grad():
        time_cantata(ours, reqs), time_diffusers(theirs, reqs, device)  # warm-up (kernels, allocator)
        c_runs, d_runs = [], []
        for _ in range(args.repeats):  # interleaved, so drift on the machine hits both alike
            c_runs.append(time_cantata(ours, reqs)[0])
            d_runs.append(time_diffusers(theirs, reqs, device))
    c, d = median(c_runs), median(d_runs)
    report = {
        "variant": variant.name, "size": args.size, "requests": args.requests,
        "durations_s": [r.duration for r in reqs], "steps": req.steps,
        "guidance_scale": scale, "cfg_interval": [lo, hi], "device": str(device), "dtype": str(dtype).split(".")[-1],
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cantata_s": {k: round(v, 4) for k, v in c.items()}, "diffusers_s": round(d["total"], 4),
        "ratio_diffusers_over_cantata": round(d["total"] / c["total"], 3),
    }
    if args.json:
        print(json.dumps(report))
        return
    what = f"{args.requests} requests of {reqs[0].duration:g}-{reqs[-1].duration:g}s" if args.requests > 1 else f"{args.duration:g}s"
    print(f"{variant.name} ({args.size}) {what}, {req.steps} steps, guidance {scale:g}, "
          f"cfg interval [{lo:g}, {hi:g}] on {report['device_name']} {report['dtype']}, median of {args.repeats}")
    print(f"  cantata   text {c['text']:.3f}s  dit {c['dit']:.3f}s  vae {c['vae']:.3f}s  total {c['total']:.3f}s")
    print(f"  diffusers total {d['total']:.3f}s")
    print(f"  ratio (diffusers / cantata): {report['ratio_diffusers_over_cantata']:.2f}x")


if __name__ == "__main__":
    main()
