"""A validated Runware task -> the pipeline's `GenerationRequest`: the one place protocol names
meet pipeline names.

| Runware                               | GenerationRequest                                      |
|---------------------------------------|--------------------------------------------------------|
| positivePrompt                        | caption                                                |
| settings.lyrics                       | lyrics ("" when absent: instrumental/improvised)       |
| settings.vocalLanguage                | language                                               |
| duration                              | duration (None with a source track: it sets the length)|
| settings.bpm / keyScale / timeSignature | bpm / keyscale / timesignature                       |
| seed, numberResults                   | seeds: seed, seed+1, ... one per result (see below)    |
| steps                                 | steps                                                  |
| CFGScale                              | guidance_scale (None on turbo: no guidance)            |
| settings.guidanceType                 | guidance_type ("none" -> None: the model's own, off)   |
| settings.cfgIntervalStart/End         | cfg_interval                                           |
| negativePrompt                        | negative_prompt                                        |
| settings.dcw                          | dcw                                                    |
| (derived task kind)                   | task                                                   |
| inputs.audio                          | source (48 kHz stereo waveform)                        |
| inputs.referenceAudios                | reference_audio (waveforms)                            |
| settings.coverConditioningScale       | cover_strength                                         |
| strength (cover only)                 | cover_noise_strength                                   |
| settings.repaintingStart/End          | repaint_start / repaint_end                            |
| settings.repaintMode / repaintStrength| repaint_mode / repaint_strength                        |
| settings.trackName / trackClasses     | track_name / track_classes                             |
| settings.thinking / rewriteCaption    | thinking / rewrite_caption                             |
| settings.plannerTemperature / CFGScale / TopK / TopP | planner_sampling                        |
| lora (resolved at acceptance)         | adapters: (registry path, weight) pairs                |

`strength`: Runware documents it as the "influence of the input audio". The pipeline's
`cover_noise_strength` is exactly that: the sampler starts from the source noised to time
1 - strength, so 1.0 stays closest to the source and 0.0 (like leaving it out) starts from pure
noise. It applies to cover; for the other source tasks the repaint window and mode decide how
much of the source survives, and `strength` has no further effect.

Seeds: result i gets seed + i, so one seed reproduces the whole set and every result's own seed
reproduces that result alone. Seeds stay within 0..2**63-1 (wrapping), as the API echoes them as
JSON integers the store keeps in 64-bit columns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from ..models.variants import COVER, TEXT2MUSIC
from ..models.vocabulary import NO_GUIDANCE
from ..pipeline.batch_key import batch_key as pipeline_batch_key
from ..pipeline.latents import random_seed
from ..pipeline.request import GenerationRequest, SourceAudio
from ..planner.sampling import SamplingSettings
from .task import AudioInferenceTask, Settings

SEED_SPACE = 2**63


def base_seed(task: AudioInferenceTask) -> int:
    """The task's seed, or a fresh random one (fixed at acceptance, so a retry renders the same)."""
    return task.seed if task.seed is not None else random_seed()


def result_seeds(seed: int, count: int) -> list[int]:
    return [(seed + i) % SEED_SPACE for i in range(count)]


def generation_request(task: AudioInferenceTask, *, source: torch.Tensor | None = None,
                       references: Sequence[torch.Tensor] = ()) -> GenerationRequest:
    """`task` must carry its seed (see `base_seed`); `source`/`references` are [2, N] 48 kHz waveforms."""
    if task.seed is None:
        raise ValueError("the task's seed must be fixed before it is mapped")
    s = task.settings
    return GenerationRequest(
        caption=task.positive_prompt,
        lyrics=s.lyrics or "",
        language=s.vocal_language,
        duration=task.duration,
        bpm=s.bpm,
        keyscale=s.key_scale,
        timesignature=s.time_signature,
        seeds=result_seeds(task.seed, task.number_results),
        batch_size=task.number_results,
        steps=task.steps,
        # The validator filled both from `sampling_params`; a model that never guides has "none"
        # and no scale, which the pipeline spells None ("the model's own": no guidance).
        guidance_type=None if s.guidance_type == NO_GUIDANCE else s.guidance_type,
        guidance_scale=task.cfg_scale,
        cfg_interval=(s.cfg_interval_start, s.cfg_interval_end),
        negative_prompt=task.negative_prompt,
        dcw=s.dcw,
        task=task.task_kind,
        source=SourceAudio(waveform=source) if source is not None and task.task_kind != TEXT2MUSIC else None,
        reference_audio=list(references),
        cover_strength=s.cover_conditioning_scale,
        cover_noise_strength=(task.strength or 0.0) if task.task_kind == COVER else 0.0,
        repaint_start=s.repainting_start,
        repaint_end=s.repainting_end,
        repaint_mode=s.repaint_mode,
        repaint_strength=s.repaint_strength,
        track_name=s.track_name,
        track_classes=list(s.track_classes) or None,
        adapters=[(choice.path, choice.weight) for choice in task.loras],
        thinking=s.thinking,
        planner_sampling=planner_sampling(s),
        rewrite_caption=s.rewrite_caption,
    )


def planner_sampling(s: Settings) -> SamplingSettings:
    """The planner's sampling settings: the task's values, the planner's defaults for those it leaves None."""
    given = {"temperature": s.planner_temperature, "cfg_scale": s.planner_cfg_scale, "top_k": s.planner_top_k,
             "top_p": s.planner_top_p}
    return SamplingSettings(**{k: v for k, v in given.items() if v is not None})


def batch_key(task: AudioInferenceTask) -> tuple | None:
    """Which queued tasks may share a DiT batch: the pipeline's one rule (`pipeline.batch_key`)
    applied to the request this task becomes. A task is keyed when it is queued, before its audio
    is loaded and before its model may be: the rule reads whether there are reference tracks,
    never their samples, so each stands in as an empty waveform here."""
    unread = [torch.empty(2, 0)] * len(task.inputs.reference_audios)
    request = generation_request(dataclasses.replace(task, seed=task.seed or 0), references=unread)  # seeds: not read
    return pipeline_batch_key(request, task.variant)
