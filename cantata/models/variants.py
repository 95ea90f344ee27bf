"""The ACE-Step 1.5 DiT variants Cantata knows, with their defaults and where they live.

One table, so that the pipeline (defaults), the checkpoint loader (directory, Hub repo), the API
(AIR, allowed tasks and fields) and the CLI agree on every variant. `sampling_params` is the one
place the sampler defaults are filled in and the one place that decides whether guidance is on;
the API validator, the job mapping, the pipeline and the CLI all read its answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .vocabulary import APG, GUIDANCE_TYPES, NO_GUIDANCE

TEXT2MUSIC = "text2music"
COVER = "cover"
REPAINT = "repaint"
LEGO = "lego"
EXTRACT = "extract"
COMPLETE = "complete"

CORE_TASKS = (TEXT2MUSIC, COVER, REPAINT)
ALL_TASKS = (TEXT2MUSIC, COVER, REPAINT, LEGO, EXTRACT, COMPLETE)

#: Hub repository holding the shared VAE and Qwen3 text encoder (and the 2B turbo DiT).
MAIN_REPO = "ACE-Step/Ace-Step1.5"
VAE_DIR = "vae"
TEXT_ENCODER_DIR = "Qwen3-Embedding-0.6B"


@dataclass(frozen=True)
class Variant:
    """One DiT checkpoint and the way the official UI runs it."""

    name: str  # short name used by the CLI and the Python API
    dirname: str  # directory under the checkpoints root (official layout)
    repo_id: str  # Hub repository the directory is downloaded from
    air: str  # Runware model identifier
    turbo: bool
    steps: int
    shift: float
    guidance_scale: float  # 1.0 = no guidance (turbo)
    guidance_type: str  # "apg" | "cfg", or "none" for models distilled to run without guidance
    tasks: tuple[str, ...]
    xl: bool
    max_steps: int  # what the API accepts (Runware: 20 for turbo, 300 otherwise)

    @property
    def guides(self) -> bool:
        """Whether the model takes guidance at all (turbo models are distilled to run without);
        the API offers the guidance fields (CFGScale, negativePrompt, guidanceType, cfgInterval*)
        only where this holds."""
        return self.guidance_type != NO_GUIDANCE

    @property
    def hub_subfolder(self) -> str | None:
        """Directory inside `repo_id` when the DiT ships inside the main bundle."""
        return self.dirname if self.repo_id == MAIN_REPO else None


def _v(name, dirname, repo, air, turbo, tasks, xl):
    return Variant(
        name=name,
        dirname=dirname,
        repo_id=repo,
        air=air,
        turbo=turbo,
        steps=8 if turbo else 50,
        shift=3.0,
        guidance_scale=1.0 if turbo else 7.0,
        guidance_type=NO_GUIDANCE if turbo else APG,
        tasks=tasks,
        xl=xl,
        max_steps=20 if turbo else 300,
    )


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        _v("xl-sft", "acestep-v15-xl-sft", "ACE-Step/acestep-v15-xl-sft",
           "runware:ace-step@v1.5-xl-sft", False, CORE_TASKS, True),
        _v("xl-base", "acestep-v15-xl-base", "ACE-Step/acestep-v15-xl-base",
           "runware:ace-step@v1.5-xl-base", False, ALL_TASKS, True),
        _v("xl-turbo", "acestep-v15-xl-turbo", "ACE-Step/acestep-v15-xl-turbo",
           "runware:ace-step@v1.5-xl-turbo", True, CORE_TASKS, True),
        _v("base", "acestep-v15-base", "ACE-Step/acestep-v15-base",
           "runware:ace-step@v1.5-base", False, ALL_TASKS, False),
        # Runware does not sell the 2B SFT; it gets an AIR in our own namespace.
        _v("sft", "acestep-v15-sft", "ACE-Step/acestep-v15-sft",
           "cantata:ace-step@v1.5-sft", False, CORE_TASKS, False),
        _v("turbo", "acestep-v15-turbo", MAIN_REPO,
           "runware:ace-step@v1.5-turbo", True, CORE_TASKS, False),
    )
}

DEFAULT_VARIANT = "xl-sft"


class SamplingParams(NamedTuple):
    """One request's sampler settings with the variant's defaults filled in.

    Made once by `sampling_params` and read everywhere else, like nano-vllm's SamplingParams;
    `guided` is the one answer to "is classifier-free guidance on?" (diffusers'
    `do_classifier_free_guidance`). A tuple, so it can be unpacked and serve in batch keys.
    """

    steps: int
    shift: float
    guidance_type: str  # "apg" | "cfg"; "none" on models that never guide (turbo)
    guidance_scale: float | None  # None on models that never guide

    @property
    def guided(self) -> bool:
        """Guidance runs (a second, unconditional pass per step) only for a guiding model at a
        scale above 1: at 1 the guided velocity equals the conditional one."""
        return self.guidance_type != NO_GUIDANCE and self.guidance_scale is not None and self.guidance_scale > 1.0


def sampling_params(variant: Variant, *, steps: int | None = None, shift: float | None = None,
                    guidance_type: str | None = None, guidance_scale: float | None = None) -> SamplingParams:
    """`None` means "the variant's default". Models distilled to run without guidance (turbo)
    ignore any guidance asked for: their `guidance_type` is "none" and their scale None."""
    steps = steps or variant.steps
    shift = variant.shift if shift is None else shift
    if not variant.guides:
        return SamplingParams(steps, shift, NO_GUIDANCE, None)
    guidance_type = guidance_type or variant.guidance_type
    if guidance_type not in GUIDANCE_TYPES:
        raise ValueError(f"unknown guidance type {guidance_type!r}; use {' or '.join(map(repr, GUIDANCE_TYPES))}")
    return SamplingParams(steps, shift, guidance_type,
                          variant.guidance_scale if guidance_scale is None else guidance_scale)


def get_variant(name_or_air: str) -> Variant:
    """Look a variant up by short name, directory name, AIR or Runware slug."""
    key = name_or_air.strip()
    for v in VARIANTS.values():
        slug = v.air.split(":", 1)[1].replace("@", "-").replace(".", "-")  # ace-step-v1-5-xl-sft
        if key in (v.name, v.dirname, v.air, slug):
            return v
    known = ", ".join(sorted(VARIANTS))
    raise KeyError(f"unknown ACE-Step variant {name_or_air!r}; known: {known}")
