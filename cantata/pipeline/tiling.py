"""Overlap-discard tiling along time, shared by the VAE encoder and decoder (model.md §8).

Both run long signals through a convolutional network in windows: each window carries `overlap`
positions of context on both sides, and the context part of its output is thrown away, so the
kept cores butt together without a crossfade. Tiling only bounds memory; it is also where a long
encode or decode can be stopped (the cancel check runs before every window), since one window is
the unit of work the caller waits on.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .cancel import CancelCheck, stop_if_cancelled


def overlap_tiles(run: Callable[[torch.Tensor], torch.Tensor], signal: torch.Tensor, chunk: int, overlap: int,
                  cancelled: CancelCheck | None = None, what: str = "tile") -> torch.Tensor:
    """`run` over `signal` (time on the last axis) in windows of `chunk` positions -> the outputs'
    cores concatenated on the last axis.

    `run` may change the time resolution (the decoder multiplies it by the hop, the encoder
    divides it): the ratio measured on the first window converts context lengths into output
    positions. Raises `GenerationCancelled` when `cancelled()` turns true before a window.
    """
    length = signal.shape[-1]
    if length <= chunk:
        stop_if_cancelled(cancelled, f"{what} 1 of 1")
        return run(signal)
    stride = chunk - 2 * overlap
    windows = math.ceil(length / stride)
    pieces, ratio = [], None
    for i in range(windows):
        stop_if_cancelled(cancelled, f"{what} {i + 1} of {windows}")
        core_lo, core_hi = i * stride, min((i + 1) * stride, length)
        win_lo, win_hi = max(0, core_lo - overlap), min(length, core_hi + overlap)
        out = run(signal[..., win_lo:win_hi])
        ratio = ratio or (out.shape[-1], win_hi - win_lo)  # (output, input) positions, kept exact
        cut_lo = int(round((core_lo - win_lo) * ratio[0] / ratio[1]))
        cut_hi = int(round((win_hi - core_hi) * ratio[0] / ratio[1]))
        pieces.append(out[..., cut_lo: out.shape[-1] - cut_hi if cut_hi else None])
    return torch.cat(pieces, dim=-1)

