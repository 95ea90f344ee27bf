"""`cantata` command line: generate songs, make test checkpoints, serve the API, manage API keys,
and talk to any Runware-compatible server (`cantata run`)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from .models.variants import DEFAULT_VARIANT, VARIANTS, SamplingParams, sampling_params
from .models.vocabulary import GUIDANCE_TYPES, MEMORY_CHOICES, REPAINT_MODES, TIME_SIGNATURES, TRACK_NAMES

DEMO_ROOT = Path.home() / ".cache" / "cantata" / "demo-checkpoints-2"  # bump when the tiny layout changes


def _interval(text: str) -> tuple[float, float]:
    """'0.2:0.9' -> (0.2, 0.9)."""
    try:
        lo, hi = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END, got {text!r}") from None
    return lo, hi


def _window(text: str) -> tuple[float | None, float | None]:
    """'10:20' -> (10, 20); '-5:' -> (-5, None); ':30' -> (None, 30)."""
    try:
        lo, hi = text.split(":")
        return (float(lo) if lo else None, float(hi) if hi else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END in seconds, got {text!r}") from None


def _lora_choice(text: str) -> tuple[str, float]:
    """'style:0.8' -> ('style', 0.8); 'style' -> ('style', 1.0); a path may hold colons itself."""
    name, sep, weight = text.rpartition(":")
    if sep:
        try:
            return name, float(weight)
        except ValueError:
            pass
    return text, 1.0


def _read_audio(path: Path):
    import torch

    from .audio.decode import decode_audio

    return torch.from_numpy(decode_audio(path.read_bytes()))


def _per_model(read) -> str:
    """A default as each model has it, grouped: 'xl-sft, xl-base, base, sft: 50; xl-turbo, turbo: 8'
    (read from `sampling_params`, the defaults' one owner, so the help cannot drift from them)."""
    groups: dict[str, list[str]] = {}
    for name, variant in VARIANTS.items():
        groups.setdefault(read(sampling_params(variant)), []).append(name)
    if len(groups) == 1:
        return f"{next(iter(groups))} for every model"
    return "; ".join(f"{', '.join(names)}: {value}" for value, names in groups.items())


def _guidance_default(p: SamplingParams) -> str:
    return p.guidance_type if p.guidance_scale is not None else "none (ignored)"


MEMORY_HELP = ("what stays on the GPU: high (everything), balanced (text encoder and VAE moved in for each use), "
               "low (balanced + INT8 DiT weights, changes the song slightly), offload (DiT blocks streamed from "
               "the CPU); auto (default) picks the highest that fits in the free memory")


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="render a song to an audio file",
                       description="Render a song with ACE-Step 1.5. The output extension picks the format "
                                   "(.mp3, .wav, .flac, .ogg).")
    p.add_argument("prompt", help="caption: genre, instruments, mood, vocals")
    lyr = p.add_mutually_exclusive_group()
    lyr.add_argument("--lyrics", default="", help="lyrics text with [Verse]/[Chorus] tags; omit for instrumental")
    lyr.add_argument("--lyrics-file", type=Path, help="read the lyrics from a file")
    p.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--bpm", type=int)
    p.add_argument("--key", help="key and mode, e.g. 'F# minor'")
    p.add_argument("--time-signature", type=int, choices=TIME_SIGNATURES)
    p.add_argument("--language", default="en", help="vocal language code (default en; 'unknown' for instrumental)")
    p.add_argument("--seed", type=int, action="append", help="seed; repeat for several items (default random)")
    p.add_argument("--batch", type=int, default=1, help="items to render when no seeds are given")
    p.add_argument("--steps", type=int, help=f"diffusion steps (default {_per_model(lambda p: p.steps)})")
    p.add_argument("--shift", type=float, help=f"schedule shift (default {_per_model(lambda p: f'{p.shift:g}')})")
    p.add_argument("--guidance", choices=GUIDANCE_TYPES, help=f"guidance type (default {_per_model(_guidance_default)})")
    p.add_argument("--guidance-scale", type=float, help="guidance scale, > 1 to guide "
                   f"(default {_per_model(lambda p: 'none (ignored)' if p.guidance_scale is None else f'{p.guidance_scale:g}')})")
    p.add_argument("--cfg-interval", type=_interval, default=(0.0, 1.0),
                   help="START:END in t (1 = noise); guidance only where START <= t <= END")
    p.add_argument("--negative-prompt", help="what to steer away from (needs guidance scale > 1)")
    p.add_argument("--dcw", action="store_true", help="enable the DCW wavelet correction (off by default)")
    p.add_argument("--model", default=DEFAULT_VARIANT, help=f"variant or AIR ({', '.join(VARIANTS)})")
    p.add_argument("--checkpoints", type=Path, help="checkpoints root (default $CANTATA_CHECKPOINTS or ~/.cache)")
    p.add_argument("--demo", action="store_true",
                   help="use tiny random checkpoints (made on first use): runs anywhere in seconds, output is noise")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing checkpoints")
    p.add_argument("--planner", default="auto", help="the 5 Hz LM planner: auto (one already under the checkpoints "
                   "root, 1.7B first; --demo ships a tiny one), none, 0.6B, 1.7B or 4B (downloaded when missing)")
    p.add_argument("--think", action="store_true",
                   help="text-to-music: the planner writes audio codes that guide the DiT (needs a planner)")
    p.add_argument("--rewrite-caption", action="store_true",
                   help="let the planner's caption replace yours (off by default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    p.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on CUDA), fp32, bf16, fp16")
    p.add_argument("--memory", default="auto", choices=MEMORY_CHOICES, help=MEMORY_HELP)
    p.add_argument("--bitrate", type=int, help="kbps for MP3/OGG")
    p.add_argument("--sample-rate", type=int, help="output sample rate (default 48000)")
    p.add_argument("--channels", type=int, choices=(1, 2), help="output channels (default 2)")
    p.add_argument("-o", "--output", type=Path, default=Path("song.mp3"), help="output file (default song.mp3)")
    p.add_argument("--lora", type=_lora_choice, action="append", metavar="NAME_OR_PATH[:WEIGHT]",
                   help="adapter (installed name, or a LoRA/LoKr path) with its weight (default 1); repeatable, "
                        "summed")
    p.add_argument("--loras", type=Path, help="adapter registry for --lora names (default <data dir>/loras)")
    a2a = p.add_argument_group("audio to audio", "transform a track instead of starting from silence")
    a2a.add_argument("--audio", type=Path, help="source track (any common format); its length sets the duration")
    a2a.add_argument("--task", choices=("cover", "repaint", "lego", "extract", "complete"),
                     help="default: repaint with --repaint, else cover (lego/extract/complete: base models)")
    a2a.add_argument("--repaint", type=_window, metavar="START:END",
                     help="seconds to regenerate; a negative START or an END past the source outpaints; "
                          "either side may be empty ('30:' = from 30 s to the end)")
    a2a.add_argument("--repaint-mode", choices=REPAINT_MODES, default="balanced")
    a2a.add_argument("--repaint-strength", type=float, default=0.5, help="balanced mode: 0 keeps most, 1 keeps least")
    a2a.add_argument("--cover-strength", type=float, default=1.0,
                     help="fraction of the steps conditioned on the source's structure (default 1)")
    a2a.add_argument("--cover-noise-strength", type=float, default=0.0,
                     help="start from the source noised to 1 - this (0 = from noise, default)")
    a2a.add_argument("--reference", type=Path, action="append", help="timbre reference track; repeatable")
    a2a.add_argument("--track", help=f"stem for lego/extract ({', '.join(TRACK_NAMES)})")
    a2a.add_argument("--track-classes", help="comma-separated stems to add for complete")
    p.set_defaults(func=cmd_generate)


def _add_checkpoint(sub) -> None:
    p = sub.add_parser("checkpoint", help="checkpoint utilities")
    csub = p.add_subparsers(dest="checkpoint_cmd", required=True)
    tiny = csub.add_parser("make-tiny", help="write tiny random checkpoints in the official layout")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument("--variant", action="append", choices=sorted(VARIANTS),
                      help="variant(s) to write (default xl-sft); repeat for several")
    tiny.add_argument("--size", choices=("tiny", "mid"), default="tiny")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--shards", type=int, default=1, help="write the DiT weights as N shards + index")
    tiny.set_defaults(func=cmd_make_tiny)


def _add_role_flags(p) -> None:
    """The flags every serving role shares (`serve`, `worker`; read by `_role_config`)."""
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--data-dir", type=Path, help="database and media directory (default ~/.local/share/cantata)")
    p.add_argument("--checkpoints", type=Path, help="checkpoint root (default $CANTATA_CHECKPOINTS or ~/.cache)")
    p.add_argument("--model", action="append", help=f"variant to serve; repeat for several (default xl-sft; "
                                                    f"{', '.join(VARIANTS)})")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", help="auto, fp32, bf16, fp16")
    p.add_argument("--memory", choices=MEMORY_CHOICES, help=MEMORY_HELP)
    p.add_argument("--demo", action="store_true",
                   help="serve tiny random checkpoints (made on first use): the whole API in seconds, audio is noise")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing checkpoints")
    p.add_argument("--planner", help="the 5 Hz LM planner: auto (default: one already under the checkpoints root, "
                   "1.7B first; --demo ships a tiny one), none, 0.6B, 1.7B or 4B (downloaded when missing)")
    p.add_argument("--allow-private-urls", action="store_true",
                   help="let webhooks, uploads and input URLs reach loopback/private addresses")
    p.add_argument("--store", help="job store: a SQLite file (default <data-dir>/cantata.db) or postgresql://… "
                   "shared by every API and worker process")
    p.add_argument("--media", help="media storage: a folder (default <data-dir>/media) or s3://bucket/prefix "
                   "(endpoint, region and credentials from the AWS_* variables)")
    p.add_argument("--media-presign", action="store_true", help="S3: answer result URLs with presigned redirects")


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve Runware's audioInference API over HTTP and WebSocket",
                       description="Serve ACE-Step 1.5 behind Runware's audioInference protocol (POST /v1, "
                                   "WebSocket /v1). Every option can also come from --config FILE or a "
                                   "CANTATA_* environment variable (see cantata/config.py); flags win.")
    _add_role_flags(p)
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, help="TCP port (default 8080)")
    p.add_argument("--public-url", help="base URL clients reach the server at (for audioURL links)")
    p.add_argument("--no-auth", action="store_true", help="accept requests without an API key (local use only)")
    p.add_argument("--api-keys-file", type=Path, help="hashed API keys (default <data-dir>/api-keys)")
    p.add_argument("--loras", type=Path, help="adapter registry folder (default <data-dir>/loras)")
    p.add_argument("--no-worker", action="store_true",
                   help="API only (stateless): tasks go to the shared --store for `cantata worker` processes")
    p.add_argument("--devices", type=_devices, help="one worker process per device, e.g. cuda:0,cuda:1 (this "
                   "process serves the API)")
    p.set_defaults(func=cmd_serve)


def _devices(text: str) -> tuple[str, ...]:
    devices = tuple(d.strip() for d in text.split(",") if d.strip())
    if not devices:
        raise argparse.ArgumentTypeError("name at least one device, e.g. cuda:0,cuda:1")
    return devices


def _add_worker(sub) -> None:
    p = sub.add_parser("worker", help="run model workers for a shared store (no HTTP): one process per device",
                       description="Claim tasks from the shared job store (--store) and run them on one device. "
                                   "Reads the same configuration as `cantata serve` (file, CANTATA_* variables, "
                                   "flags).")
    _add_role_flags(p)
    p.add_argument("--max-batch-size", type=int, help="results one DiT batch may carry (default 4)")
    p.set_defaults(func=cmd_worker, api_keys_file=None)


def _keys_file_flags(parser, default) -> None:
    """Where the keys file is. Given to `keys` and to each of its commands, so the flags work on
    either side (`keys --data-dir D add NAME` and `keys add NAME --data-dir D`); the commands'
    copies default to SUPPRESS so they never overwrite a value given before the command."""
    parser.add_argument("--config", type=Path, default=default, help="TOML configuration file")
    parser.add_argument("--data-dir", type=Path, default=default, help="data directory holding the default keys file")
    parser.add_argument("--api-keys-file", type=Path, default=default, help="keys file (default <data-dir>/api-keys)")


def _add_keys(sub) -> None:
    p = sub.add_parser("keys", help="manage API keys (stored hashed); a running server follows the changes",
                       description="Add, list and remove API keys. A running server re-reads the keys file "
                                   "within about a second: no restart needed.")
    _keys_file_flags(p, None)
    ksub = p.add_subparsers(dest="keys_cmd", required=True)
    add = ksub.add_parser("add", help="create a key; it is printed once and only its hash is stored")
    add.add_argument("name", help="key name: the identity that owns tasks and media")
    listing = ksub.add_parser("list", help="list key names")
    rm = ksub.add_parser("remove", help="revoke a key")
    rm.add_argument("name")
    for command in (add, listing, rm):
        _keys_file_flags(command, argparse.SUPPRESS)
    p.set_defaults(func=cmd_keys)


def _add_lora(sub) -> None:
    p = sub.add_parser("lora", help="install and list LoRA/LoKr adapters; a running server sees new ones at once",
                       description="The adapter registry (--loras DIR, config key loras, default "
                                   "<data-dir>/loras). Requests name an adapter in their lora list.")
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--data-dir", type=Path, help="data directory (default ~/.local/share/cantata)")
    p.add_argument("--loras", type=Path, help="adapter registry folder (default <data-dir>/loras)")
    lsub = p.add_subparsers(dest="lora_cmd", required=True)
    add = lsub.add_parser("add", help="check an adapter against its base model's shapes and install it")
    add.add_argument("path", type=Path, help="a PEFT LoRA directory, a LoKr file, or a single .safetensors")
    add.add_argument("--name", help="name requests use (default: the file or directory name)")
    add.add_argument("--model", default=DEFAULT_VARIANT, help=f"base model it was trained for (default "
                                                              f"{DEFAULT_VARIANT}; {', '.join(VARIANTS)})")
    add.add_argument("--checkpoints", type=Path, help="checkpoint root holding the model's config.json")
    add.add_argument("--demo", action="store_true", help="check against the tiny demo checkpoints' shapes")
    lsub.add_parser("list", help="list the installed adapters")
    p.set_defaults(func=cmd_lora)


def cmd_lora(args) -> int:
    from .models.adapters.registry import LoraRegistry, base_shapes
    from .models.variants import get_variant

    config = _server_config(argparse.Namespace(config=args.config, data_dir=args.data_dir, api_keys_file=None),
                            loras=args.loras)
    registry = LoraRegistry(config.loras)
    if args.lora_cmd == "add":
        variant = get_variant(args.model)
        root = demo_checkpoints(variant.name) if args.demo else args.checkpoints or config.checkpoints
        entry = registry.install(args.path, variant, base_shapes(root, variant), args.name)
        print(f"installed {entry.name} ({entry.kind}, {entry.modules} modules, for {entry.base}) as {entry.air}")
        return 0
    for entry in registry.entries():
        print(f"{entry.name}\t{entry.kind}\t{entry.base}\t{entry.architecture}\t{entry.air}")
    return 0


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="send one audioInference task to a Runware-compatible server",
                       description="Like Runware's CLI: `cantata run MODEL key=value ...` with dotted paths "
                                   "(settings.bpm=132, inputs.audio=song.mp3); values are typed by the field; "
                                   "local audio files are sent inline. Results are downloaded to --output-dir.")
    p.add_argument("model", help="model AIR, e.g. runware:ace-step@v1.5-xl-sft")
    p.add_argument("fields", nargs="*", metavar="key=value")
    p.add_argument("--url", default=os.environ.get("CANTATA_URL", "http://127.0.0.1:8080/v1"),
                   help="endpoint (default $CANTATA_URL or http://127.0.0.1:8080/v1)")
    transport = p.add_mutually_exclusive_group()
    transport.add_argument("--http", action="store_true", help="send over HTTP POST (default)")
    transport.add_argument("--ws", action="store_true", help="send over the WebSocket at the same URL")
    p.add_argument("--api-key", default=os.environ.get("CANTATA_API_KEY") or os.environ.get("RUNWARE_API_KEY"),
                   help="API key (default $CANTATA_API_KEY or $RUNWARE_API_KEY)")
    p.add_argument("--delivery-method", choices=("sync", "async"), default="async")
    p.add_argument("--poll-interval", type=float, default=2.0, help="seconds between getResponse polls")
    p.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    p.add_argument("--output-dir", type=Path, default=Path("outputs"))
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    from tqdm import tqdm

    from .client import ClientError, Transport, build_task, run, save_results

    logging.getLogger("httpx").setLevel(logging.WARNING)
    url = args.url
    if args.ws and url.startswith("http"):
        url = "ws" + url[4:]
    transport = Transport(url, args.api_key, timeout=args.timeout)
    try:
        task = build_task(args.model, args.fields, args.delivery_method)
        with tqdm(total=100, desc=task["taskUUID"][:8], unit="%") as bar:
            items = run(transport, task, poll_interval=args.poll_interval,
                        progress=lambda pct: bar.update(max(0, pct - bar.n)))
            bar.update(100 - bar.n)
        for path, item in zip(save_results(items, args.output_dir, task.get("outputFormat", "MP3")), items):
            extra = f"  cost={item['cost']}" if "cost" in item else ""
            print(f"{path}  seed={item.get('seed')}{extra}")
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        transport.close()
    return 0


def demo_checkpoints(variant: str) -> Path:
    """Tiny random checkpoints under ~/.cache, written on first use."""
    from .models.tiny import write_tiny_checkpoint
    from .models.variants import get_variant

    from .planner.checkpoint import DEFAULT_PLANNER, get_planner_spec
    from .planner.tiny import write_tiny_planner

    v = get_variant(variant)
    if not (DEMO_ROOT / v.dirname / "config.json").is_file():
        write_tiny_checkpoint(DEMO_ROOT, [v.name])
    if not (DEMO_ROOT / get_planner_spec(DEFAULT_PLANNER).dirname / "config.json").is_file():
        write_tiny_planner(DEMO_ROOT, DEFAULT_PLANNER)
    return DEMO_ROOT


def cmd_generate(args) -> int:
    from tqdm import tqdm

    from .audio.codecs import FILE_EXTENSIONS, encode
    from .pipeline import CantataPipeline, GenerationRequest, SourceAudio

    fmt = args.output.suffix.lstrip(".").upper()
    if fmt not in FILE_EXTENSIONS:
        raise SystemExit(f"cannot tell the format from {args.output.name!r}: use .mp3, .wav, .flac or .ogg")
    lyrics = args.lyrics_file.read_text() if args.lyrics_file else args.lyrics
    from .models.checkpoint import default_root
    from .planner import PLANNERS, served_planner

    root = demo_checkpoints(args.model) if args.demo else args.checkpoints
    try:
        planner = served_planner(root or default_root(), args.planner)
    except ValueError as exc:
        raise SystemExit(f"--planner: {exc}") from None
    if args.think and planner is None:
        raise SystemExit("--think needs the 5 Hz LM planner: none found under the checkpoints root "
                         f"(pass --planner {' / '.join(PLANNERS)} to download one)")
    from .models.device import resolve_device
    from .models.speed.memory import apply_tier, resolve_tier

    tier = resolve_tier(args.memory, resolve_device(args.device), args.model)  # free memory before it loads
    pipe = CantataPipeline.from_pretrained(root, args.model, device=args.device, dtype=args.dtype,
                                           download=not args.no_download, planner=planner)
    apply_tier(pipe, tier)
    task = args.task or ("repaint" if args.repaint else "cover" if args.audio else "text2music")
    if task != "text2music" and args.audio is None:
        raise SystemExit(f"--task {task} needs --audio FILE")
    start, end = args.repaint or (None, None)
    request = GenerationRequest(
        caption=args.prompt, lyrics=lyrics, language=args.language, duration=args.duration, bpm=args.bpm,
        keyscale=args.key, timesignature=args.time_signature, seeds=args.seed, batch_size=args.batch,
        steps=args.steps, shift=args.shift, guidance_type=args.guidance, guidance_scale=args.guidance_scale,
        cfg_interval=args.cfg_interval, negative_prompt=args.negative_prompt, dcw=args.dcw,
        task=task, source=SourceAudio(waveform=_read_audio(args.audio)) if args.audio else None,
        reference_audio=[_read_audio(r) for r in args.reference or []],
        cover_strength=args.cover_strength, cover_noise_strength=args.cover_noise_strength,
        repaint_start=start, repaint_end=end, repaint_mode=args.repaint_mode, repaint_strength=args.repaint_strength,
        track_name=args.track, track_classes=args.track_classes.split(",") if args.track_classes else None,
        adapters=_adapters(args.lora or [], args.loras, pipe.variant),
        thinking=args.think, rewrite_caption=args.rewrite_caption,
    )
    with tqdm(total=sampling_params(pipe.variant, steps=request.steps).steps, desc="diffusion", unit="step") as bar:
        def on_step(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = pipe.generate(request, on_step=on_step)
    for i, (audio, seed) in enumerate(zip(result.audio, result.seeds)):
        path = args.output if len(result.seeds) == 1 else args.output.with_stem(f"{args.output.stem}-{i + 1}")
        path.write_bytes(encode(audio.numpy(), result.sample_rate, fmt, out_sample_rate=args.sample_rate,
                                channels=args.channels, bitrate_kbps=args.bitrate))
        print(f"{path}  seed={seed}  {audio.shape[-1] / result.sample_rate:.1f}s")
    if result.planned is not None:
        planned = {k: v for k, v in dataclasses.asdict(result.planned).items() if v is not None}
        print("planned: " + "  ".join(f"{k}={v}" for k, v in planned.items()))
    if args.demo:
        print("(demo checkpoints have random weights: the audio is noise)")
    return 0


def _adapters(choices: list[tuple[str, float]], folder: Path | None, variant) -> list[tuple[Path, float]]:
    """--lora NAME_OR_PATH[:WEIGHT] -> (path, weight): an installed adapter's name (or AIR) first,
    else a path on disk (loaded and checked by the pipeline)."""
    if not choices:
        return []
    from .config import load_config
    from .models.adapters.registry import LoraRegistry

    registry = LoraRegistry(folder or load_config(None).loras)
    resolved = []
    for name, weight in choices:
        entry = registry.find(name)
        if entry is not None and not entry.fits(variant):
            raise SystemExit(f"--lora {name}: installed for {entry.base}, whose shapes differ from {variant.name}'s")
        path = entry.path if entry is not None else Path(name)
        if not path.exists():
            raise SystemExit(f"--lora {name}: neither an installed adapter ({registry.folder}) nor a path")
        resolved.append((path, weight))
    return resolved


def _server_config(args, **flags):
    from .config import load_config

    overrides = {"data_dir": args.data_dir, "api_keys_file": args.api_keys_file, **flags}
    return load_config(args.config, overrides=overrides)


def _role_config(args, **flags):
    """The configuration of a serving role: the shared flags, demo checkpoints resolved."""
    config = _server_config(
        args, checkpoints=args.checkpoints, models=args.model, device=args.device, dtype=args.dtype,
        memory=args.memory,
        demo=args.demo or None, download=False if args.no_download else None, planner=args.planner,
        allow_private_urls=args.allow_private_urls or None, store=args.store, media=args.media,
        media_presign=args.media_presign or None, **flags)
    if not args.verbose:
        logging.getLogger().setLevel(config.log_level.upper())
    if config.demo and args.checkpoints is None:
        for model in config.models:
            root = demo_checkpoints(model)
        config = config.replace(checkpoints=root)
    return config


def cmd_serve(args) -> int:
    import uvicorn

    from .api.app import create_app
    from .api.headers import UVICORN_OPTIONS
    from .devices import DeviceWorkers
    from .logfmt import kv

    config = _role_config(args, host=args.host, port=args.port, public_url=args.public_url,
                          no_auth=args.no_auth or None, loras=args.loras, role="api" if args.no_worker else None,
                          devices=args.devices)
    if config.no_auth:
        logging.getLogger("cantata").warning(kv("auth.disabled", note="--no-auth: every request is accepted "
                                                "without a key; do not expose this server"))
    app = create_app(config)
    devices = DeviceWorkers(config)
    devices.start()
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level, **UVICORN_OPTIONS,
                    ws_max_size=config.max_request_bytes, timeout_graceful_shutdown=config.shutdown_grace + 5)
    finally:
        devices.stop(config.shutdown_grace)
    return 0


def cmd_worker(args) -> int:
    """Run this process's workers until SIGTERM/SIGINT, then stop like a server does (the running
    batch finishes within the grace period, else it is requeued uncounted)."""
    import signal
    import threading

    from .jobs.engine import Engine
    from .logfmt import kv

    config = _role_config(args, role="worker", max_batch_size=args.max_batch_size)
    engine = Engine.from_config(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    engine.start()
    log = logging.getLogger("cantata.worker")
    log.info(kv("worker.started", device=config.device, models=",".join(config.models), store=config.postgres
                and "postgresql" or config.store_url, pid=os.getpid()))
    stop.wait()
    log.info(kv("worker.stopping", grace=config.shutdown_grace))
    engine.stop()
    engine.store.close()
    return 0


def cmd_keys(args) -> int:
    from .api.auth import add_key, read_keys_file, remove_key

    path = _server_config(args).api_keys_file
    if args.keys_cmd == "add":
        key = add_key(path, args.name)
        print(key)
        print(f"(stored the hash of key {args.name!r} in {path}; the key itself is shown only now)", file=sys.stderr)
    elif args.keys_cmd == "list":
        for name in read_keys_file(path):
            print(name)
    elif not remove_key(path, args.name):
        print(f"no key named {args.name!r} in {path}", file=sys.stderr)
        return 1
    return 0


def cmd_make_tiny(args) -> int:
    from .models.tiny import write_tiny_checkpoint

    root = write_tiny_checkpoint(args.dir, args.variant or [DEFAULT_VARIANT], seed=args.seed, size=args.size,
                                 shards=args.shards)
    print(f"wrote tiny checkpoints to {root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cantata", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_checkpoint(sub)
    _add_serve(sub)
    _add_worker(sub)
    _add_keys(sub)
    _add_lora(sub)
    _add_run(sub)
    _verbose_after_commands(parser)
    return parser


def _verbose_after_commands(parser: argparse.ArgumentParser) -> None:
    """Accept `-v` after any (sub)command too (`cantata keys list -v` as `cantata -v keys list`);
    SUPPRESS keeps a command from resetting a `-v` given before it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                     help="debug logging")
                _verbose_after_commands(command)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_format = ("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s" if args.command in ("serve", "worker", "keys")
                  else "%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=log_format)
    try:
        return args.func(args)
    except Exception as exc:  # one readable line instead of a traceback for expected failures
        from .models.checkpoint import CheckpointError
        from .pipeline.request import GenerationFailed

        if isinstance(exc, (CheckpointError, GenerationFailed, ValueError)):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
