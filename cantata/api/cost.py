"""What a task costs, reported only when the client asks (`includeCost: true`).

Runware bills open models by compute time: its published ACE-Step costs are whole multiples of
$0.00015, consistent with ceil(GPU seconds) x $0.00015 (api.md §7). Cantata does the same,
with a rate per model from the configuration:

* a real run: each result costs `round(ceil(gpu_seconds) * cost_per_gpu_second[model], 5)`,
  where gpu_seconds is that result's share of its batch's measured GPU time (batching makes
  results cheaper, as it should);
* a dry run (`X-Runware-Dry-Run: 1`), which runs nothing: a deterministic estimate,
  `round(cost_per_audio_second[model] * duration * steps / default_steps * numberResults, 5)`,
  with the model's default duration when the task has none (a source track sets it).
  At the defaults this gives XL SFT $0.00675 for 75 s at 50 steps, Runware's own example price.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..jobs.task import AudioInferenceTask

#: Length assumed for a dry-run estimate when the source track (not yet decoded) sets it.
ESTIMATE_SOURCE_SECONDS = 60.0


class CostModel:
    def __init__(self, per_gpu_second: Mapping[str, float], per_audio_second: Mapping[str, float]) -> None:
        self.per_gpu_second = dict(per_gpu_second)
        self.per_audio_second = dict(per_audio_second)

    def actual(self, model: str, gpu_seconds: float) -> float:
        return round(math.ceil(max(gpu_seconds, 0.0)) * self.per_gpu_second[model], 5)

    def estimate(self, task: AudioInferenceTask) -> float:
        duration = task.duration if task.duration is not None else ESTIMATE_SOURCE_SECONDS
        rate = self.per_audio_second[task.variant.name]
        return round(rate * duration * task.steps / task.variant.steps * task.number_results, 5)
