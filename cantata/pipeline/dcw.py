"""DCW: a wavelet-domain correction after each sampler update (model.md §4.7, off by default).

"double" mode pushes the low band of x away from the predicted clean sample by t·0.05 and the
high band by (1−t)·0.02, in a one-level Haar transform along time. The Haar pair is two lines of
arithmetic, so it is written here rather than pulling in an unmaintained wavelet package; it is
the same orthonormal transform with zero padding for odd lengths.
"""

from __future__ import annotations

import math

import torch

_R = 1 / math.sqrt(2)


def _haar(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T, C] -> (low, high) each [B, ceil(T/2), C]; odd T is zero-padded."""
    if x.shape[1] % 2:
        x = torch.nn.functional.pad(x, (0, 0, 0, 1))
    even, odd = x[:, 0::2], x[:, 1::2]
    return (even + odd) * _R, (even - odd) * _R


def _inverse_haar(low: torch.Tensor, high: torch.Tensor, length: int) -> torch.Tensor:
    out = torch.stack(((low + high) * _R, (low - high) * _R), dim=2).flatten(1, 2)
    return out[:, :length]


def dcw_correct(x_next: torch.Tensor, x0_pred: torch.Tensor, t: float,
                low_scale: float = 0.05, high_scale: float = 0.02) -> torch.Tensor:
    """Apply the "double" correction in float32 and return in x_next's dtype."""
    dtype = x_next.dtype
    low_x, high_x = _haar(x_next.float())
    low_0, high_0 = _haar(x0_pred.float())
    low = low_x + (t * low_scale) * (low_x - low_0)
    high = high_x + ((1 - t) * high_scale) * (high_x - high_0)
    return _inverse_haar(low, high, x_next.shape[1]).to(dtype)
