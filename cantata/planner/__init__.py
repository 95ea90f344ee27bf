"""The ACE-Step 1.5 5 Hz LM planner (docs: lm.md): metadata completion and "thinking" audio codes.

Knows nothing of HTTP. `load_planner` finds (or downloads) the official planner directory,
`Planner.plan` turns `PlanRequest`s into `Plan`s (metadata, audio codes), `merge_metadata` decides
who wins between the user and the planner, and `codes_to_hints` turns codes into the DiT's 25 Hz
hints with the DiT's own quantizer and detokenizer.
"""

from .checkpoint import (AUTO_PLANNER, NO_PLANNER, PLANNERS, PlannerSpec, ensure_planner, get_planner_spec,
                         load_planner, served_planner)
from .hints import codes_to_hints
from .merge import MergedMetadata, merge_metadata
from .planner import Plan, Planner, PlanRequest
from .sampling import SamplingSettings

__all__ = [
    "AUTO_PLANNER", "NO_PLANNER", "PLANNERS", "PlannerSpec", "served_planner", "ensure_planner",
    "get_planner_spec", "load_planner", "codes_to_hints",
    "MergedMetadata", "merge_metadata", "Plan", "Planner", "PlanRequest", "SamplingSettings",
]
