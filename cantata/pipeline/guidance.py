"""Combining the conditional and unconditional velocities (model.md §4.5).

`APG` is the official default for SFT/base models; `CFG` is plain classifier-free guidance,
which Runware's `guidanceType: "cfg"` asks for and the official sampler does not offer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.variants import SamplingParams
from ..models.vocabulary import APG as APG_NAME
from ..models.vocabulary import CFG as CFG_NAME


class CFG:
    """v = u + g·(c − u)."""

    def __init__(self, scale: float):
        self.scale = scale

    def __call__(self, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
        return uncond + self.scale * (cond - uncond)


class APG:
    """Adaptive projected guidance with the official constants.

    The guidance direction d = c − u is smoothed by a momentum buffer (m = −0.75, kept across the
    steps of one generation), clipped to an L2 norm of 2.5 and stripped of its component parallel
    to c. Norms and the projection run along the *time* axis (dim 1 of [B, T, 64]) per channel,
    the projection in float64, as the official code does.
    """

    momentum = -0.75
    norm_threshold = 2.5
    eta = 0.0
    dims = (1,)

    def __init__(self, scale: float):
        self.scale = scale
        self._average: torch.Tensor | None = None

    def __call__(self, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
        diff = cond - uncond
        self._average = diff if self._average is None else diff + self.momentum * self._average
        diff = self._average
        norm = diff.norm(p=2, dim=self.dims, keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(diff), self.norm_threshold / norm)
        d64, c64 = diff.double(), F.normalize(cond.double(), dim=self.dims)
        parallel = (d64 * c64).sum(dim=self.dims, keepdim=True) * c64
        update = (d64 - parallel).type_as(diff) + self.eta * parallel.type_as(diff)
        return cond + (self.scale - 1) * update


def make_guidance(sampling: SamplingParams) -> CFG | APG | None:
    """The guidance for resolved sampler settings; None when `sampling.guided` says it is off."""
    if not sampling.guided:
        return None
    return {APG_NAME: APG, CFG_NAME: CFG}[sampling.guidance_type](sampling.guidance_scale)
