"""The ACE-Step 1.5 DiT variants Cantata knows, with their defaults and where they live.

One table, so that the pipeline (defaults), the checkpoint loader (directory, Hub repo), the API
(AIR, allowed tasks and fields) and the CLI agree on every variant.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    guidance_type: str  # "apg" | "cfg" | "none"
    tasks: tuple[str, ...]
    xl: bool
    max_steps: int  # what the API accepts (Runware: 20 for turbo, 300 otherwise)

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
        guidance_type="none" if turbo else "apg",
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


def get_variant(name_or_air: str) -> Variant:
    """Look a variant up by short name, directory name, AIR or Runware slug."""
    key = name_or_air.strip()
    for v in VARIANTS.values():
        slug = v.air.split(":", 1)[1].replace("@", "-").replace(".", "-")  # ace-step-v1-5-xl-sft
        if key in (v.name, v.dirname, v.air, slug):
            return v
    known = ", ".join(sorted(VARIANTS))
    raise KeyError(f"unknown ACE-Step variant {name_or_air!r}; known: {known}")
