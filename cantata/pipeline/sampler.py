"""The Euler ODE loop over the DiT (model.md §4.4), with the task hooks it needs.

Differences from the official loop, all output-neutral: outside the cfg interval only the
conditional half of the batch is run (the official code runs and discards the unconditional
half); cancellation and progress are checked between steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..models.padded_dit import dit_forward
from .cancel import CancelCheck, stop_if_cancelled
from .crossfade import crossfade, window_weights
from .dcw import dcw_correct
from .guidance import APG, CFG


@dataclass
class Phase:
    """Conditions in force from `first_step` on (cover switches conditions mid-run)."""

    first_step: int
    cond: torch.Tensor  # [B, L, Denc] packed condition sequence
    uncond: torch.Tensor | None  # [B, L', Denc]; None without guidance
    context: torch.Tensor  # [B, T, 128] = [source or hints | chunk mask]
    caption_width: int = 0  # caption tokens in `cond` (the cover switch reuses it)
    cond_lengths: torch.Tensor | None = None  # [B] tokens of each item's own sequence (padded batches)
    uncond_lengths: torch.Tensor | None = None


@dataclass
class Repaint:
    """Known-region enforcement and boundary blend (model.md §5.3)."""

    mask: torch.Tensor  # [B, T] bool, True = frames to regenerate
    source: torch.Tensor  # [B, T, 64] clean source latents
    injection_steps: int  # after each of the first N steps, reset the kept region
    crossfade_frames: int  # linear ramp length just outside the window after sampling


@dataclass
class SamplerPlan:
    timesteps: torch.Tensor  # [N+1] from the first t down to 0, model dtype
    phases: list[Phase]
    guidance: APG | CFG | None = None
    cfg_interval: tuple[float, float] = (0.0, 1.0)
    dcw: bool = False
    repaint: Repaint | None = None
    frames: torch.Tensor | None = None  # [B] valid frames per item when items were padded


StepCallback = Callable[[int, int], None]


def _forward(transformer, x: torch.Tensor, t: torch.Tensor, enc: torch.Tensor, context: torch.Tensor,
             frames: torch.Tensor | None, enc_lengths: torch.Tensor | None) -> torch.Tensor:
    tt = t * torch.ones((x.shape[0],), device=x.device, dtype=x.dtype)
    return dit_forward(transformer, x, tt, enc, context, frames, enc_lengths)


def velocity(transformer, x: torch.Tensor, t: torch.Tensor, phase: Phase, guided: bool,
             frames: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(cond, uncond) velocities; the unconditional pass only when guidance applies."""
    if not guided or phase.uncond is None:
        return _forward(transformer, x, t, phase.cond, phase.context, frames, phase.cond_lengths), None
    if phase.uncond.shape[1] == phase.cond.shape[1]:
        both = lambda a, b: None if a is None else torch.cat([a, b])  # noqa: E731
        v = _forward(transformer, torch.cat([x, x]), t, torch.cat([phase.cond, phase.uncond]),
                     torch.cat([phase.context, phase.context]), both(frames, frames),
                     both(phase.cond_lengths, phase.uncond_lengths))
        return v.chunk(2)
    # A negative prompt longer than the caption: the two halves cannot share a batch.
    return (_forward(transformer, x, t, phase.cond, phase.context, None, None),
            _forward(transformer, x, t, phase.uncond, phase.context, None, None))


@torch.no_grad()
def sample(transformer, x: torch.Tensor, noise: torch.Tensor, plan: SamplerPlan,
           on_step: StepCallback | None = None, cancelled: CancelCheck | None = None) -> torch.Tensor:
    """Integrate from `x` (noise, or a noised source) along `plan.timesteps` to t = 0."""
    ts = plan.timesteps
    steps = ts.shape[0] - 1
    # Padded batches: frames past an item's end stay zero, in x and in every velocity, so that
    # APG's norms along time and DCW's wavelet pairs see exactly what the item sees alone.
    keep = None
    if plan.frames is not None:
        keep = (torch.arange(x.shape[1], device=x.device)[None, :] < plan.frames[:, None]).unsqueeze(-1).to(x.dtype)
        x = x * keep
    start, end = plan.cfg_interval
    phase_idx = 0
    for i in range(steps):
        stop_if_cancelled(cancelled, f"step {i + 1} of {steps}")
        while phase_idx + 1 < len(plan.phases) and i >= plan.phases[phase_idx + 1].first_step:
            phase_idx += 1
        phase = plan.phases[phase_idx]
        t_curr, t_next = ts[i], ts[i + 1]
        # Compared as tensors, in the schedule dtype, exactly as the official code does.
        guided = plan.guidance is not None and bool(t_curr >= start) and bool(t_curr <= end)
        cond_v, uncond_v = velocity(transformer, x, t_curr, phase, guided, plan.frames)
        if keep is not None:
            cond_v = cond_v * keep
            uncond_v = None if uncond_v is None else uncond_v * keep
        v = plan.guidance(cond_v, uncond_v) if uncond_v is not None else cond_v

        x_before = x
        x = x - v * ((t_curr - t_next) * torch.ones_like(x[:, :1, :1]))
        if plan.dcw:
            t_f = float(t_curr)
            x0_pred = x_before - v * (t_f * torch.ones_like(x[:, :1, :1]))
            x = dcw_correct(x, x0_pred, t_f)
        if keep is not None:
            x = x * keep
        if plan.repaint is not None and i < plan.repaint.injection_steps:
            rp = plan.repaint
            known = t_next * noise + (1.0 - t_next) * rp.source
            x = torch.where(rp.mask.unsqueeze(-1), x, known)
        if on_step is not None:
            on_step(i + 1, steps)
    if plan.repaint is not None:
        x = boundary_blend(x, plan.repaint.source, plan.repaint.mask, plan.repaint.crossfade_frames)
    return x


def boundary_blend(x: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, frames: int) -> torch.Tensor:
    """Keep the source outside the window (`mask`: one contiguous window per row), with linear
    ramps over `frames` frames on each side."""
    soft = mask.float().clone()
    for b, row in enumerate(mask):
        idx = torch.nonzero(row).flatten()
        if 0 < idx.numel() < row.shape[0]:
            soft[b] = window_weights(row.shape[0], int(idx[0]), int(idx[-1]) + 1, frames, device=soft.device)
    return crossfade(x, source, soft.unsqueeze(-1))
