"""DiT speed and memory switches (issue 9): attention kernels, fused projections, regional
`torch.compile` with length buckets, INT8/FP8 weights, and the memory tiers.

Every switch lives in `SpeedOptions` (`options.py`), whose defaults per device are decided in one
function, `default_options`. `apply_speed(dit, options)` installs them on a loaded DiT; the DiT
forward the sampler calls (`cantata.models.padded_dit.dit_forward`) reads them back.
"""

from .apply import apply_speed, speed_options
from .options import ATTENTION_KINDS, QUANTIZATIONS, SpeedOptions, default_options

__all__ = ["ATTENTION_KINDS", "QUANTIZATIONS", "SpeedOptions", "apply_speed", "default_options", "speed_options"]
