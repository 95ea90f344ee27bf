"""Which requests may share one DiT batch: the one rule, read by the pipeline (`generate_batch`
refuses a mixed batch), by the job layer's picker when it groups queued tasks (in memory or in the
store's claim) and nowhere else.

Text-to-music requests with the same sampler settings batch whatever their prompts and lengths:
padded items are masked (`padded_dit`), so each gets what it would alone. Adapters are not part of
the key: each item's adapters act only on its own rows (`use_adapters`). Sources, reference
tracks and the planner's codes make a request its own batch (None).
"""

from __future__ import annotations

from ..models.variants import Variant
from .planning import resolve_defaults
from .request import GenerationRequest


def batch_key(request: GenerationRequest, variant: Variant) -> tuple | None:
    """Equal keys share a batch; None runs alone. Reads only the request's settings, never the
    samples of its audio (the job layer keys tasks before their audio is loaded)."""
    if request.task != "text2music" or request.reference_audio:
        return None
    if request.thinking or request.semantic_hints is not None:  # each has its own codes: alone
        return None
    return (variant.name, *resolve_defaults(request, variant), tuple(request.cfg_interval), request.dcw)
