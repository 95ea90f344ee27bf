"""promptEnhance: a short prompt in, the planner's caption for it out, several versions at once.

The official "format" mode (lm.md §2.3, `format_sample`) writes a CoT block with genres and then
free text; the planner's decoding state machine has no genres field and stops at the end of the
reasoning block, so an enhanced prompt comes from the **metadata phase with `use_cot_caption`**
instead: the generation prompt with the user's text as the caption and no lyrics, and the
caption the planner writes there (the same caption `rewriteCaption` would give a song). Every
version is one request of a single planner batch, each with its own seed.
"""

from __future__ import annotations

from .cancel import CancelCheck
from .latents import random_seed


def enhance_prompt(planner, prompt: str, *, versions: int, max_length: int, seeds: list[int] | None = None,
                   cancelled: CancelCheck | None = None) -> list[str]:
    """`versions` captions for `prompt`, each at most `max_length` characters. A version whose
    caption came out empty is the prompt itself: an enhancement never answers with nothing."""
    from ..planner import PlanRequest  # the planner package imports this one's context builders

    seeds = seeds if seeds is not None else [random_seed() for _ in range(versions)]
    asks = [PlanRequest(caption=prompt, thinking=False, use_cot_caption=True, seeds=[seed]) for seed in seeds]
    plans = planner.plan(asks, cancelled=cancelled)
    return [clip(str(plan.metadata.get("caption") or "").strip() or prompt, max_length) for plan in plans]


def clip(text: str, max_length: int) -> str:
    """`text` cut to `max_length` characters, at the last word break when one is in the second half."""
    if len(text) <= max_length:
        return text
    cut = text[:max_length]
    space = cut.rfind(" ")
    return (cut[:space] if space >= max_length // 2 else cut).rstrip(" ,;:")
