"""A `GenerationRequest` -> everything the sampler and the decoder need (model.md §4, §5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..models.variants import SamplingParams, Variant, sampling_params
from . import prompts, tasks
from .conditioning import Conditioner
from .guidance import make_guidance
from .latents import HOP, MIN_FRAMES, SAMPLE_RATE, duration_frames, duration_samples, pad_with_silence, random_seed
from .request import GenerationRequest
from .cancel import CancelCheck
from .sampler import Phase, Repaint, SamplerPlan
from .schedule import sft_schedule, turbo_schedule
from .sources import Source, load_source, timbre_inputs

SOURCE_TASKS = ("cover", "repaint", "lego", "extract", "complete")
WINDOW_TASKS = ("repaint", "lego")  # tasks with a time window (and outpainting)


@dataclass
class Splice:
    """Put the original waveform back outside the regenerated window after decoding."""

    source: torch.Tensor  # [2, samples] padded source waveform
    start: int  # samples, in padded coordinates
    end: int
    crossfade: int


@dataclass
class Prepared:
    seeds: list[int]
    frames: int  # latent frames sampled (>= MIN_FRAMES)
    samples: int  # audio samples delivered per item
    plan: SamplerPlan
    start: Callable[[torch.Tensor], torch.Tensor] | None  # noise -> initial x; None = pure noise
    splice: Splice | None  # None: the output is peak-normalized instead (no source kept verbatim)


def resolve_defaults(req: GenerationRequest, v: Variant) -> SamplingParams:
    """The request's sampler settings with the variant's defaults filled in (by `sampling_params`,
    their one owner, which also decides whether guidance is on)."""
    return sampling_params(v, steps=req.steps, shift=req.shift, guidance_type=req.guidance_type,
                           guidance_scale=req.guidance_scale)


def prepare(req: GenerationRequest, variant: Variant, dit, conditioner: Conditioner, vae,
            cancelled: CancelCheck | None = None) -> Prepared:
    if req.task not in variant.tasks:
        raise ValueError(f"{variant.name} does not support task {req.task!r} (supports {', '.join(variant.tasks)})")
    seeds = list(req.seeds) if req.seeds else [random_seed() for _ in range(req.batch_size)]
    batch, device, dtype = len(seeds), dit.device, dit.dtype
    sampling = resolve_defaults(req, variant)
    steps, shift = sampling.steps, sampling.shift
    silence_latent = dit.silence_latent
    encoder_rng = torch.Generator(device=next(vae.parameters()).device).manual_seed(seeds[0])

    source = _load(req, vae, silence_latent, encoder_rng, cancelled) if req.task in SOURCE_TASKS else None
    if source is not None:
        samples = source.samples
        frames_wanted = source.latents.shape[1]
        # Official: the metas describe the source as given, not the outpainted canvas.
        duration = _source_seconds(req)
    elif req.semantic_hints is not None:  # the planner's codes set the length (lm.md §6.2)
        frames_wanted = req.semantic_hints.shape[-2]
        duration = req.duration if req.duration is not None else frames_wanted * HOP / SAMPLE_RATE
        samples = duration_samples(duration)
    else:
        duration = req.duration if req.duration is not None else 60.0
        frames_wanted = duration_frames(duration)
        samples = duration_samples(duration)
    frames = max(MIN_FRAMES, frames_wanted)
    samples = min(samples, frames * HOP)
    src = pad_with_silence(source.latents, frames, silence_latent).expand(batch, -1, -1) if source else None

    timesteps = (turbo_schedule if variant.turbo else sft_schedule)(steps, shift, dtype, device)
    guidance = make_guidance(sampling)
    metas = prompts.metas_string(req.bpm, req.timesignature, prompts.normalize_keyscale(req.keyscale), duration)
    lyric = prompts.lyric_prompt(req.lyrics, req.language)
    timbre, order = timbre_inputs(req.reference_audio, batch, vae, silence_latent, seeds[0], cancelled)

    def phase(task: str, first_step: int, context_src: torch.Tensor, caption_width: int | None = None) -> Phase:
        instruction = prompts.instruction_for(task, req.track_name, req.track_classes)
        caption = prompts.caption_prompt(instruction, req.caption, metas)
        enc = conditioner.encode([caption] * batch, [lyric] * batch, timbre, order, caption_width)
        uncond = None
        if guidance is not None:
            if req.negative_prompt:
                uncond = conditioner.negative_states(prompts.caption_prompt(instruction, req.negative_prompt, metas), enc)
            else:
                uncond = conditioner.null_states(enc.states)
        return Phase(first_step, enc.states, uncond, tasks.context(context_src), int(enc.caption_tokens.max()))

    t2m_src = tasks.text2music_source(silence_latent, frames, batch, dtype)
    repaint, splice, start = None, None, None
    if req.task == "text2music" and req.semantic_hints is not None:
        # Officially: a cover whose context is the hints themselves (already quantized by the
        # codes, so not re-quantized like a cover's source latents).
        hints = req.semantic_hints.to(dtype)
        hints = pad_with_silence(hints if hints.dim() == 3 else hints[None], frames, silence_latent)
        phases = [phase("cover", 0, hints.expand(batch, -1, -1))]
    elif req.task == "text2music":
        phases = [phase("text2music", 0, t2m_src)]
    elif req.task == "cover":
        if req.cover_noise_strength > 0:
            timesteps, start = _noised_start(timesteps, req.cover_noise_strength, src)
        hints = tasks.cover_hints(dit.audio_tokenizer, dit.detokenizer, src, silence_latent)
        phases = [phase("cover", 0, hints)]
        if req.cover_strength < 1.0:
            switch = int((timesteps.shape[0] - 1) * req.cover_strength)
            phases.append(phase("text2music", switch, t2m_src, phases[0].caption_width))
    elif req.task in WINDOW_TASKS and (req.repaint_start is not None or req.repaint_end is not None
                                       or req.task == "repaint"):
        start_s = (req.repaint_start or 0.0) + source.offset
        end_s = req.repaint_end + source.offset if req.repaint_end is not None else samples / SAMPLE_RATE
        window = tasks.repaint_window(start_s, end_s, frames, req.repaint_mode, req.repaint_strength)
        context_src = src if req.task == "lego" else tasks.repaint_source(src, window, silence_latent)
        phases = [phase(req.task, 0, context_src)]
        repaint = Repaint(mask=tasks.repaint_mask(window, batch, frames, device), source=src,
                          injection_steps=round(window.injection_ratio * (timesteps.shape[0] - 1)),
                          crossfade_frames=window.crossfade_frames)
        if req.repaint_mode != "aggressive" and source.waveform is not None:
            splice = Splice(source.waveform, int(start_s * SAMPLE_RATE), int(end_s * SAMPLE_RATE),
                            int(window.wav_crossfade_s * SAMPLE_RATE))
    else:  # lego over the whole track, extract, complete: the full source as context
        phases = [phase(req.task, 0, src)]
    plan = SamplerPlan(timesteps=timesteps, phases=phases, guidance=guidance, cfg_interval=req.cfg_interval,
                       dcw=req.dcw, repaint=repaint)
    return Prepared(seeds, frames, samples, plan, start, splice)


def _load(req: GenerationRequest, vae, silence_latent: torch.Tensor, rng: torch.Generator,
          cancelled: CancelCheck | None) -> Source:
    if req.source is None:
        raise ValueError(f"task {req.task!r} needs source audio")
    pad_left = pad_right = 0.0
    if req.task in WINDOW_TASKS:
        src_seconds = _source_seconds(req)
        pad_left = max(0.0, -(req.repaint_start or 0.0))
        if req.repaint_end is not None:
            pad_right = max(0.0, req.repaint_end - src_seconds)
    return load_source(req.source, vae, silence_latent, rng, pad_left, pad_right, cancelled)


def _source_seconds(req: GenerationRequest) -> float:
    if req.source.waveform is not None:
        return req.source.waveform.shape[-1] / SAMPLE_RATE
    return req.source.latents.shape[-2] * HOP / SAMPLE_RATE


def _noised_start(timesteps: torch.Tensor, strength: float, source: torch.Tensor):
    """Official cover noise strength: start at the schedule point nearest 1 − strength, from the
    source latents noised to that level, and run only the rest of the schedule."""
    values = timesteps[:-1].tolist()
    t_start = min(values, key=lambda t: abs(t - (1.0 - strength)))
    rest = timesteps[values.index(t_start):]
    return rest, lambda noise: t_start * noise + (1 - t_start) * source
