"""`CantataPipeline`: a validated `GenerationRequest` in, decoded 48 kHz stereo audio out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models.acestep import AceStepDiT
from ..models.checkpoint import default_root, ensure_checkpoint
from ..models.device import resolve_device, resolve_dtype
from ..models.text_encoder import load_text_encoder
from ..models.vae import load_vae
from ..models.variants import TEXT_ENCODER_DIR, VAE_DIR, Variant, get_variant
from . import prompts, tasks
from .conditioning import Conditioner
from .decode import decode_latents, finish_audio
from .guidance import make_guidance
from .latents import (MIN_FRAMES, duration_frames, duration_samples, pad_with_silence, random_seed,
                      seeded_noise, silence)
from .request import GenerationFailed, GenerationRequest, GenerationResult, SAMPLE_RATE
from .sampler import CancelCheck, Phase, Repaint, SamplerPlan, StepCallback, sample
from .schedule import sft_schedule, turbo_schedule

log = logging.getLogger(__name__)

TIMBRE_FRAMES = 750  # 30 s of reference latents feed the timbre encoder
SILENCE_PEAK = 1e-6


@dataclass
class _Prepared:
    """Everything resolved from a request before sampling."""

    seeds: list[int]
    frames: int  # latent frames sampled (>= MIN_FRAMES)
    samples: int  # audio samples delivered
    plan: SamplerPlan
    start: torch.Tensor | None  # initial x when not starting from pure noise


class CantataPipeline:
    def __init__(self, variant: Variant, dit: AceStepDiT, text_encoder, tokenizer, vae):
        self.variant = variant
        self.dit = dit
        self.vae = vae
        self.conditioner = Conditioner(tokenizer, text_encoder, dit.condition_encoder)

    @classmethod
    def from_pretrained(cls, root: str | Path | None = None, variant: str = "xl-sft", *,
                        device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                        download: bool = True) -> "CantataPipeline":
        """Load the official checkpoint layout under `root` (downloading what is missing)."""
        v = get_variant(variant)
        root = ensure_checkpoint(Path(root) if root else default_root(), v, download=download)
        dev = resolve_device(device)
        dt = resolve_dtype(dev, dtype)
        log.info("loading %s from %s on %s (%s)", v.name, root, dev, dt)
        dit = AceStepDiT.from_dir(root / v.dirname, dev, dt)
        text_encoder, tokenizer = load_text_encoder(root / TEXT_ENCODER_DIR, dev, dt)
        vae = load_vae(root / VAE_DIR, dev, dt)
        return cls(v, dit, text_encoder, tokenizer, vae)

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
        """Requests with equal keys can share one DiT batch (`generate_batch`); None: run alone.

        Text-to-music requests with the same sampler settings batch whatever their prompts and
        lengths: padded items are masked (`padded_dit`), so each gets what it would alone.
        """
        if request.task != "text2music" or request.reference_audio:
            return None
        v = self.variant
        return ("text2music", request.steps or v.steps, request.shift if request.shift is not None else v.shift,
                request.guidance_type or v.guidance_type,
                request.guidance_scale if request.guidance_scale is not None else v.guidance_scale,
                tuple(request.cfg_interval), request.dcw)

    @torch.no_grad()
    def generate_batch(self, requests: list[GenerationRequest], on_step: StepCallback | None = None,
                       cancelled: CancelCheck | None = None) -> list[GenerationResult]:
        """Several requests in one DiT batch (equal `batch_key`s), or one request of any kind.

        Progress and cancellation apply to the whole batch.
        """
        keys = [self.batch_key(r) for r in requests]
        if len(requests) > 1 and (None in keys or len(set(keys)) > 1):
            raise ValueError("these requests cannot share a batch (different batch_key)")
        preps = [self.prepare(r) for r in requests]
        plan, noise = self._merge(preps)
        x = noise if preps[0].start is None else preps[0].start(noise)
        latents = sample(self.dit.transformer, x, noise, plan, on_step=on_step, cancelled=cancelled)
        results, row = [], 0
        for prep in preps:
            n = len(prep.seeds)
            mine = latents[row:row + n, :prep.frames]
            row += n
            audio = finish_audio(decode_latents(self.vae, mine)[:, :, :prep.samples])
            self._check(audio)
            results.append(GenerationResult(audio=audio, sample_rate=SAMPLE_RATE, seeds=prep.seeds, latents=mine.cpu()))
        return results

    def _merge(self, preps: list[_Prepared]) -> tuple[SamplerPlan, torch.Tensor]:
        """One plan and one noise tensor for all items; zero padding + lengths when they differ."""
        noises = [seeded_noise(p.seeds, p.frames, self.dit.silence_latent.shape[-1], self.device, self.dtype)
                  for p in preps]
        if len(preps) == 1:
            return preps[0].plan, noises[0]
        frames = max(p.frames for p in preps)
        pad_t = lambda t: torch.nn.functional.pad(t, (0, 0, 0, frames - t.shape[1]))  # noqa: E731
        phases = [p.plan.phases[0] for p in preps]
        width = max(max(ph.cond.shape[1], ph.uncond.shape[1] if ph.uncond is not None else 0) for ph in phases)
        pad_l = lambda t: torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[1]))  # noqa: E731
        lengths = lambda ts: torch.tensor([n for t in ts for n in [t.shape[1]] * t.shape[0]], device=self.device)  # noqa: E731
        guided = phases[0].uncond is not None
        merged = Phase(
            first_step=0,
            cond=torch.cat([pad_l(ph.cond) for ph in phases]),
            uncond=torch.cat([pad_l(ph.uncond) for ph in phases]) if guided else None,
            context=torch.cat([pad_t(ph.context) for ph in phases]),
            cond_lengths=lengths([ph.cond for ph in phases]),
            uncond_lengths=lengths([ph.uncond for ph in phases]) if guided else None,
        )
        item_frames = torch.tensor([p.frames for p in preps for _ in p.seeds], device=self.device)
        base = preps[0].plan
        plan = SamplerPlan(timesteps=base.timesteps, phases=[merged], guidance=base.guidance,
                           cfg_interval=base.cfg_interval, dcw=base.dcw, frames=item_frames)
        return plan, torch.cat([pad_t(n) for n in noises])

    # -- request -> sampler plan ----------------------------------------------------------------

    def prepare(self, req: GenerationRequest) -> _Prepared:
        v = self.variant
        if req.task not in v.tasks:
            raise ValueError(f"{v.name} does not support task {req.task!r} (supports {', '.join(v.tasks)})")
        seeds = list(req.seeds) if req.seeds else [random_seed() for _ in range(req.batch_size)]
        batch = len(seeds)
        steps = req.steps or v.steps
        shift = req.shift if req.shift is not None else v.shift
        source = self._source_latents(req)
        if source is not None:
            frames_wanted = source.shape[1]
            duration = frames_wanted / 25
        else:
            duration = req.duration if req.duration is not None else 60.0
            frames_wanted = duration_frames(duration)
        frames = max(MIN_FRAMES, frames_wanted)
        samples = frames_wanted * 1920 if source is not None else min(duration_samples(duration), frames * 1920)

        silence_latent = self.dit.silence_latent
        if source is not None:
            source = pad_with_silence(source, frames, silence_latent).expand(batch, -1, -1)

        timesteps = (turbo_schedule if v.turbo else sft_schedule)(steps, shift, self.dtype, self.device)
        guidance = None if v.turbo else make_guidance(req.guidance_type or v.guidance_type,
                                                       req.guidance_scale if req.guidance_scale is not None else v.guidance_scale)
        metas = prompts.metas_string(req.bpm, req.timesignature, prompts.normalize_keyscale(req.keyscale), duration)
        lyric = prompts.lyric_prompt(req.lyrics, req.language)
        timbre, order = self._timbre(batch)

        def phase(task: str, first_step: int, src: torch.Tensor, caption_width: int | None = None) -> Phase:
            instruction = prompts.instruction_for(task, req.track_name, req.track_classes)
            caption = prompts.caption_prompt(instruction, req.caption, metas)
            enc = self.conditioner.encode([caption] * batch, [lyric] * batch, timbre, order, caption_width)
            uncond = None
            if guidance is not None:
                if req.negative_prompt:
                    neg = prompts.caption_prompt(instruction, req.negative_prompt, metas)
                    uncond = self.conditioner.negative_states(neg, enc)
                else:
                    uncond = self.conditioner.null_states(enc.states)
            return Phase(first_step, enc.states, uncond, tasks.context(src), int(enc.caption_tokens.max()))

        t2m_src = tasks.text2music_source(silence_latent, frames, batch, self.dtype)
        repaint = None
        if req.task == "text2music":
            phases = [phase("text2music", 0, t2m_src)]
        elif req.task == "cover":
            hints = tasks.cover_hints(self.dit.audio_tokenizer, self.dit.detokenizer, source, silence_latent)
            phases = [phase("cover", 0, hints)]
            if req.cover_strength < 1.0:
                phases.append(phase("text2music", int(steps * req.cover_strength), t2m_src, phases[0].caption_width))
        elif req.task == "repaint":
            window = tasks.repaint_window(req.repaint_start, req.repaint_end, frames, req.repaint_mode, req.repaint_strength)
            phases = [phase("repaint", 0, tasks.repaint_source(source, window, silence_latent))]
            repaint = Repaint(mask=tasks.repaint_mask(window, batch, frames, self.device), source=source,
                              injection_steps=round(window.injection_ratio * steps),
                              crossfade_frames=window.crossfade_frames)
        else:
            raise ValueError(f"task {req.task!r} is not implemented")
        plan = SamplerPlan(timesteps=timesteps, phases=phases, guidance=guidance, cfg_interval=req.cfg_interval,
                           dcw=req.dcw, repaint=repaint)
        return _Prepared(seeds=seeds, frames=frames, samples=samples, plan=plan, start=None)

    def _source_latents(self, req: GenerationRequest) -> torch.Tensor | None:
        if req.task == "text2music":
            return None
        if req.source is None or req.source.latents is None:
            raise ValueError(f"task {req.task!r} needs source audio")
        lat = req.source.latents
        return (lat if lat.ndim == 3 else lat.unsqueeze(0)).to(self.device, self.dtype)

    def _timbre(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """No reference audio: the first 750 silence frames per item (never zeros; pitfall 9)."""
        ref = silence(self.dit.silence_latent, TIMBRE_FRAMES).expand(batch, -1, -1)
        return ref, torch.arange(batch, device=self.device)

    @staticmethod
    def _check(audio: torch.Tensor) -> None:
        if not torch.isfinite(audio).all():
            raise GenerationFailed("the model produced NaN/Inf audio (try fp32 or bf16 instead of fp16)")
        peaks = audio.flatten(1).abs().max(dim=1).values
        if (peaks < SILENCE_PEAK).any():
            raise GenerationFailed("the model produced silent audio")
