"""The repaint window's crossfade, shared by the latent blend after sampling and the waveform
splice after decoding (model.md §5.3): the same ramp shape, in frames or in samples.
"""

from __future__ import annotations

import torch


def window_weights(length: int, start: int, end: int, ramp: int, device: torch.device | None = None) -> torch.Tensor:
    """`[length]` float32 weights of the regenerated part: 1 inside `[start, end)`, 0 outside,
    with linear ramps over the `ramp` positions just outside each edge (the ramp's own 0 and 1
    endpoints excluded, as officially)."""
    weights = torch.zeros(length, device=device)
    weights[start:end] = 1.0
    if ramp > 0:
        lo, hi = max(start - ramp, 0), min(end + ramp, length)
        if start > lo:
            weights[lo:start] = torch.linspace(0.0, 1.0, start - lo + 2, device=device)[1:-1]
        if hi > end:
            weights[end:hi] = torch.linspace(1.0, 0.0, hi - end + 2, device=device)[1:-1]
    return weights


def crossfade(regenerated: torch.Tensor, kept: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`weights` of the regenerated signal, the rest of the kept one (weights broadcast)."""
    return weights * regenerated + (1.0 - weights) * kept
