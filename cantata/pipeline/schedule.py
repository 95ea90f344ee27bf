"""Timestep schedules (model.md §4.3).

t runs from 1 (noise) to 0 (data). The official code builds the SFT/base schedule as a tensor in
the model dtype, so on a bf16 GPU every t (and every dt) is bf16-rounded -- keep it that way or
a seed stops meaning the same song (parity pitfall 5).
"""

from __future__ import annotations

import torch

TURBO_SHIFTS = (1.0, 2.0, 3.0)


def sft_schedule(steps: int, shift: float, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """N+1 points from 1 to 0: u = linspace(1, 0), t = s·u / (1 + (s−1)·u), in `dtype`."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=dtype, device=device)
    if shift == 1.0:
        return u
    return shift * u / (1 + (shift - 1) * u)


def turbo_schedule(steps: int, shift: float, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """Same formula in Python floats (the official turbo tables), then a final 0.

    The turbo checkpoints were distilled at shifts 1, 2 and 3; others snap to the nearest.
    """
    if not 1 <= steps <= 20:
        raise ValueError("turbo models take 1 to 20 steps")
    s = min(TURBO_SHIFTS, key=lambda v: abs(v - shift))
    ts = [s * u / (1 + (s - 1) * u) for u in (1 - i / steps for i in range(steps))]
    return torch.tensor(ts + [0.0], dtype=dtype, device=device)
