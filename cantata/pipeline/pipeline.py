"""`CantataPipeline`: a validated `GenerationRequest` in, decoded 48 kHz stereo audio out."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models.acestep import AceStepDiT
from ..models.adapters import use_adapters
from ..models.adapters.registry import AdapterCache
from ..models.checkpoint import default_root, ensure_checkpoint
from ..models.device import resolve_device, resolve_dtype
from ..models.speed import SpeedOptions, apply_speed, default_options
from ..models.speed.memory import Residency, decode_beside_sampling
from ..models.text_encoder import load_text_encoder
from ..models.vae import load_vae
from ..models.variants import TEXT_ENCODER_DIR, VAE_DIR, Variant, get_variant
from .conditioning import Conditioner
from .decode import decode_latents, finish_audio, splice_source
from .latents import seeded_noise
from .planning import Prepared, prepare
from .request import SAMPLE_RATE, GenerationFailed, GenerationRequest, GenerationResult, PlannedMetadata
from .batch_key import batch_key
from .cancel import CancelCheck
from .sampler import Phase, SamplerPlan, StepCallback, sample
from .thinking import plan_requests

log = logging.getLogger(__name__)

SILENCE_PEAK = 1e-6
ADAPTER_CACHE_BYTES = 2 * 2**30  # loaded adapters kept on the device (the server sets its own budget)


@dataclass(frozen=True)
class Sampled:
    """One request's final latents, not yet decoded (`CantataPipeline.sample_batch`)."""

    prep: Prepared
    latents: torch.Tensor  # [seeds, frames, 64] on the device, in the model dtype
    planned: PlannedMetadata | None  # what the planner decided; None when it did not run

    @property
    def seeds(self) -> list[int]:
        return self.prep.seeds


class CantataPipeline:
    def __init__(self, variant: Variant, dit: AceStepDiT, text_encoder, tokenizer, vae, planner=None):
        self.variant = variant
        self.planner = planner  # a `cantata.planner.Planner`, or None: no metadata completion, no thinking
        self.dit = dit
        self.vae = vae
        self.conditioner = Conditioner(tokenizer, text_encoder, dit.condition_encoder)
        self.adapter_cache = AdapterCache(dit.transformer, ADAPTER_CACHE_BYTES)
        self.residency = Residency(dit.device)  # what `speed.memory.apply_tier` keeps off the GPU
        self.memory_tier = "high"
        # Whether the server decodes a batch while the next one samples (`speed.memory` decides per
        # tier; `apply_tier` sets it).
        self.decode_beside_sampling = decode_beside_sampling(self.memory_tier)
        self._side_stream = None  # the CUDA stream `decode` runs on beside sampling

    @classmethod
    def from_pretrained(cls, root: str | Path | None = None, variant: str = "xl-sft", *,
                        device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                        download: bool = True, planner: str | None = None,
                        speed: SpeedOptions | None = None) -> "CantataPipeline":
        """Load the official checkpoint layout under `root` (downloading what is missing), and
        the 5 Hz LM planner `planner` ("0.6B", "1.7B", "4B"; None: none) from the same root.
        `speed`: the DiT's speed switches (None: `default_options` of the device)."""
        v = get_variant(variant)
        root = ensure_checkpoint(Path(root) if root else default_root(), v, download=download)
        dev = resolve_device(device)
        dt = resolve_dtype(dev, dtype)
        log.info("loading %s from %s on %s (%s)", v.name, root, dev, dt)
        dit = AceStepDiT.from_dir(root / v.dirname, dev, dt)
        apply_speed(dit.transformer, speed or default_options(dev))
        text_encoder, tokenizer = load_text_encoder(root / TEXT_ENCODER_DIR, dev, dt)
        vae = load_vae(root / VAE_DIR, dev, dt)
        lm = None
        if planner is not None:
            from ..planner import Planner  # the planner imports this package's context builders

            log.info("loading planner %s from %s", planner, root)
            lm = Planner.from_pretrained(root, planner, device=dev, dtype=dt, download=download)
        return cls(v, dit, text_encoder, tokenizer, vae, lm)

    @property
    def device(self) -> torch.device:
        return self.dit.device

    @property
    def dtype(self) -> torch.dtype:
        return self.dit.dtype

    # -- public API ---------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, request: GenerationRequest, on_step: StepCallback | None = None,
                 cancelled: CancelCheck | None = None) -> GenerationResult:
        return self.generate_batch([request], on_step, cancelled)[0]

    def batch_key(self, request: GenerationRequest) -> tuple | None:
        """Requests with equal keys can share one DiT batch (`generate_batch`); None: run alone
        (`cantata.pipeline.batch_key`, the one rule)."""
        return batch_key(request, self.variant)

    @torch.no_grad()
    def generate_batch(self, requests: list[GenerationRequest], on_step: StepCallback | None = None,
                       cancelled: CancelCheck | None = None) -> list[GenerationResult]:
        """Several requests in one DiT batch (equal `batch_key`s), or one request of any kind:
        `sample_batch`, then `decode` of each request's latents.

        Progress and cancellation apply to the whole batch; `cancelled` is polled between planner
        decode steps, between sampler steps and before every VAE window, encode and decode alike.
        """
        return [self.decode(item, cancelled) for item in self.sample_batch(requests, on_step, cancelled)]

    @torch.no_grad()
    def sample_batch(self, requests: list[GenerationRequest], on_step: StepCallback | None = None,
                     cancelled: CancelCheck | None = None) -> list[Sampled]:
        """Everything up to the final latents, one `Sampled` per request (the server's worker
        decodes them on its finisher thread while the next batch samples: `decode_beside_sampling`).
        The planner, when loaded, runs first for the requests that need it (`thinking.plan_requests`)."""
        keys = [self.batch_key(r) for r in requests]
        if len(requests) > 1 and (None in keys or len(set(keys)) > 1):
            raise ValueError("these requests cannot share a batch (different batch_key)")
        requests, planned = plan_requests(self.planner, self.dit, requests, cancelled)
        selections = [self.adapter_cache.resolve(r.adapters) for r in requests]
        preps = [self.prepare(r, cancelled) for r in requests]
        plan, noise = self.plan_batch(preps)
        x = noise if preps[0].start is None else preps[0].start(noise)
        rows = [selection for prep, selection in zip(preps, selections) for _ in prep.seeds]  # as plan_batch
        with use_adapters(self.dit.transformer, rows=rows):
            latents = sample(self.dit.transformer, x, noise, plan, on_step=on_step, cancelled=cancelled)
        sampled, row = [], 0
        for prep, plan in zip(preps, planned):
            n = len(prep.seeds)
            sampled.append(Sampled(prep=prep, latents=latents[row:row + n, :prep.frames], planned=plan))
            row += n
        return sampled

    @torch.no_grad()
    def decode(self, item: Sampled, cancelled: CancelCheck | None = None) -> GenerationResult:
        """One request's latents -> its audio. Thread-safe beside `sample_batch`: with
        `decode_beside_sampling` on a GPU it runs on a stream of its own, so the VAE's kernels
        interleave with the next batch's DiT steps instead of queueing behind them."""
        prep = item.prep
        with self._decode_stream(), self.residency.using(self.vae):
            # Anti-clip the decoded audio before the splice (as officially), so the source put
            # back outside the window stays exactly the source; then normalize unless spliced.
            decoded = decode_latents(self.vae, item.latents, cancelled=cancelled)
        audio = finish_audio(decoded[:, :, :prep.samples], normalize_dbfs=None)
        audio = splice_source(audio, prep.splice) if prep.splice is not None else finish_audio(audio)
        self._check(audio)
        return GenerationResult(audio=audio, sample_rate=SAMPLE_RATE, seeds=prep.seeds, latents=item.latents.cpu(),
                                planned=item.planned)

    def _decode_stream(self):
        """On CUDA beside sampling: a side stream that first waits for the work that made the
        latents; elsewhere the current stream."""
        if not (self.decode_beside_sampling and self.device.type == "cuda"):
            return nullcontext()
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(self.device)
        self._side_stream.wait_stream(torch.cuda.default_stream(self.device))
        return torch.cuda.stream(self._side_stream)

    def plan_batch(self, preps: list[Prepared]) -> tuple[SamplerPlan, torch.Tensor]:
        """One plan and one noise tensor for all items; zero padding + lengths when they differ."""
        noises = [seeded_noise(p.seeds, p.frames, self.dit.silence_latent.shape[-1], self.device, self.dtype)
                  for p in preps]
        if len(preps) == 1:
            return preps[0].plan, noises[0]
        frames = max(p.frames for p in preps)
        phases = [p.plan.phases[0] for p in preps]
        guided = phases[0].uncond is not None
        width = max(t.shape[1] for ph in phases for t in (ph.cond, ph.uncond) if t is not None)
        merged = Phase(
            first_step=0,
            cond=torch.cat([_pad_rows(ph.cond, width) for ph in phases]),
            uncond=torch.cat([_pad_rows(ph.uncond, width) for ph in phases]) if guided else None,
            context=torch.cat([_pad_rows(ph.context, frames) for ph in phases]),
            cond_lengths=_row_lengths([ph.cond for ph in phases]),
            uncond_lengths=_row_lengths([ph.uncond for ph in phases]) if guided else None,
        )
        base = preps[0].plan
        plan = SamplerPlan(timesteps=base.timesteps, phases=[merged], guidance=base.guidance,
                           cfg_interval=base.cfg_interval, dcw=base.dcw,
                           frames=torch.tensor([p.frames for p in preps for _ in p.seeds], device=self.device))
        return plan, torch.cat([_pad_rows(n, frames) for n in noises])

    def prepare(self, request: GenerationRequest, cancelled: CancelCheck | None = None) -> Prepared:
        """Resolve a request into the sampler plan (public for tests and benchmarks)."""
        with self.residency.using(self.conditioner.text_encoder, self.vae):
            return prepare(request, self.variant, self.dit, self.conditioner, self.vae, cancelled)

    @staticmethod
    def _check(audio: torch.Tensor) -> None:
        if not torch.isfinite(audio).all():
            raise GenerationFailed("the model produced NaN/Inf audio (try fp32 or bf16 instead of fp16)")
        peaks = audio.flatten(1).abs().max(dim=1).values
        if (peaks < SILENCE_PEAK).any():
            raise GenerationFailed("the model produced silent audio")


def _pad_rows(t: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad dim 1 of `[B, L, C]` to `length` (masked out downstream)."""
    return torch.nn.functional.pad(t, (0, 0, 0, length - t.shape[1]))


def _row_lengths(parts: list[torch.Tensor]) -> torch.Tensor:
    """Each row's own sequence length, for the rows of `parts` concatenated."""
    return torch.tensor([t.shape[1] for t in parts for _ in range(t.shape[0])], device=parts[0].device)
