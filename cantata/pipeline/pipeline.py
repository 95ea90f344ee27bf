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
        prep = self.prepare(request)
        noise = seeded_noise(prep.seeds, prep.frames, self.dit.silence_latent.shape[-1], self.device, self.dtype)
        x = noise if prep.start is None else prep.start(noise)
        latents = sample(self.dit.transformer, x, noise, prep.plan, on_step=on_step, cancelled=cancelled)
        audio = decode_latents(self.vae, latents)[:, :, : prep.samples]
        audio = finish_audio(audio)
        self._check(audio)
        return GenerationResult(audio=audio, sample_rate=SAMPLE_RATE, seeds=prep.seeds, latents=latents.cpu())

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
