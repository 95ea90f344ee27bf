"""Who wins between the user and the planner (lm.md §6.1).

The user's bpm, key, time signature and duration always win; the planner fills only what is
missing. The caption the DiT sees is the planner's only when `rewrite_caption` is on (the
official default; Cantata's is off, because users ask the planner not to rewrite their words).
The vocal language: officially the planner's never reaches the DiT (the handler looks up a key
the parser never writes), so the user's language, or none, is used; `planned_language=True`
is the corrected behaviour, where the planner's language fills a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .planner import PlanRequest


@dataclass(frozen=True)
class MergedMetadata:
    caption: str
    bpm: int | None
    keyscale: str | None
    timesignature: int | None
    duration: float | None  # seconds for the DiT's metas; codes, when present, set the length
    language: str | None


def merge_metadata(request: PlanRequest, planned: dict[str, Any], language: str | None, *,
                   rewrite_caption: bool = False, planned_language: bool = False) -> MergedMetadata:
    """`language` is the user's vocal language (None: not given)."""
    bpm = request.bpm if request.bpm is not None else _int(planned.get("bpm"))
    keyscale = request.keyscale or planned.get("keyscale") or None
    timesignature = _int(request.timesignature) if request.timesignature not in (None, "") else _int(
        planned.get("timesignature"))
    duration = request.duration if request.duration and request.duration > 0 else _int(planned.get("duration"))
    caption = planned["caption"] if rewrite_caption and planned.get("caption") else request.caption
    if planned_language and not language:
        language = planned.get("language") or None
    return MergedMetadata(caption, bpm, keyscale, timesignature,
                          float(duration) if duration is not None else None, language)


def _int(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
