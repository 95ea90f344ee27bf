"""What the pipeline takes and gives: plain values and tensors, no HTTP and no file formats."""

from __future__ import annotations

from dataclasses import dataclass, field

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import CantataError
from ..models.adapters import Adapter

if TYPE_CHECKING:  # the planner imports the pipeline's context builders, not the other way round
    from ..planner.sampling import SamplingSettings as PlannerSampling

SAMPLE_RATE = 48_000


@dataclass
class SourceAudio:
    """Audio to transform (cover, repaint, lego/extract/complete).

    Give the waveform (`[2, samples]` float32 at 48 kHz; it is VAE-encoded) or, to bypass the
    encoder, the latents (`[frames, 64]` at 25 Hz) -- or both, when latents were cached.
    """

    waveform: torch.Tensor | None = None
    latents: torch.Tensor | None = None


@dataclass
class GenerationRequest:
    """One prompt rendered `batch_size` times, each item with its own seed.

    `None` means "the variant's default" for steps, shift, guidance_type and guidance_scale.
    """

    caption: str
    lyrics: str = ""
    language: str = "en"
    duration: float | None = 60.0  # seconds; ignored when a source sets the length
    bpm: int | None = None
    keyscale: str | None = None
    timesignature: int | None = None
    seeds: list[int] | None = None  # one per item; random when None
    batch_size: int = 1
    steps: int | None = None
    shift: float | None = None
    guidance_type: str | None = None  # "apg" | "cfg"
    guidance_scale: float | None = None
    cfg_interval: tuple[float, float] = (0.0, 1.0)
    negative_prompt: str | None = None
    dcw: bool = False

    # Audio-to-audio.
    task: str = "text2music"  # text2music | cover | repaint | lego | extract | complete
    source: SourceAudio | None = None
    reference_audio: list[torch.Tensor] = field(default_factory=list)  # waveforms, timbre
    cover_strength: float = 1.0  # fraction of steps conditioned on the source (cover)
    cover_noise_strength: float = 0.0  # > 0: start from the noised source instead of noise
    repaint_start: float | None = None  # seconds; negative = outpaint before the source
    repaint_end: float | None = None  # seconds; past the source end = outpaint after it
    repaint_mode: str = "balanced"  # conservative | balanced | aggressive
    repaint_strength: float = 0.5  # used by "balanced"
    track_name: str | None = None  # lego / extract
    track_classes: list[str] | None = None  # complete

    # Adapters (LoRA/LoKr), summed: (a loaded `Adapter`, or the path of one, weight) pairs. Paths are
    # loaded once and kept by the pipeline's `adapter_cache`; weight 0 or none is the base model.
    adapters: list[tuple[Adapter | str | Path, float]] = field(default_factory=list)

    # The 5 Hz LM planner (`cantata.pipeline.thinking`): a pipeline with a planner completes the
    # missing bpm / key / time signature / duration of a text-to-music request; `thinking` also
    # has it write audio codes that guide the DiT. The user's values always win.
    thinking: bool = False
    planner_sampling: PlannerSampling | None = None  # None: the planner's defaults
    rewrite_caption: bool = False  # the planner's caption replaces the user's (official: on)
    # 25 Hz semantic hints `[items or 1, frames, 64]` (from audio codes): text-to-music rendered
    # over them, as the official handler does with `precomputed_lm_hints_25Hz`; they set the length.
    semantic_hints: torch.Tensor | None = None


@dataclass(frozen=True)
class PlannedMetadata:
    """What the planner decided for one request, as the DiT used it: the user's values where
    given, the planner's where missing. `language` is the vocal language the DiT sang in (the
    planner's own guess officially never reaches the DiT, lm.md); `caption` is set only when the
    planner's caption replaced the user's."""

    bpm: int | None
    keyscale: str | None
    timesignature: int | None
    duration: float | None
    language: str | None
    caption: str | None
    codes: int  # audio codes written per item (0 without thinking)


@dataclass
class GenerationResult:
    audio: torch.Tensor  # [batch, 2, samples] float32 on CPU, peak at -1 dBFS
    sample_rate: int
    seeds: list[int]
    latents: torch.Tensor  # [batch, frames, 64] final latents (model dtype, CPU)
    planned: PlannedMetadata | None = None  # what the planner decided; None when it did not run


class GenerationCancelled(Exception):
    """Raised between steps when the caller's cancel check returns True."""


class GenerationFailed(CantataError, RuntimeError):
    """The model produced unusable output (NaN, silence); never delivered as a file."""

    def __init__(self, message: str) -> None:
        super().__init__("inferenceError", message)
