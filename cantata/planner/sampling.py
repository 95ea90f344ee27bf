"""Per-step sampling of the planner, in the official PyTorch backend's order (lm.md §5.1):
CFG -> FSM -> repetition penalty -> top-k -> top-p (on untempered logits) -> temperature -> draw.

Every sampled token is one `torch.multinomial` over the full vocabulary (on CPU: one exponential
draw of vocabulary size), so a seeded CPU generator reproduces the official tokens; greedy
steps (temperature <= 0) draw nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


@dataclass(frozen=True)
class SamplingSettings:
    """Defaults are the official `GenerationParams` ones (lm.md §7)."""

    temperature: float = 0.85
    cfg_scale: float = 2.0  # codes phase only; <= 1 turns CFG off
    top_k: int | None = None  # None or 0: off
    top_p: float | None = 0.9  # None or >= 1: off
    repetition_penalty: float = 1.0  # not exposed officially

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if self.top_p is not None and not 0.0 <= self.top_p <= 1.0:
            raise ValueError("top_p must be within [0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """`u + s·(c − u)` in float32; on masked tokens this gives NaN/−inf, which the FSM overwrites."""
    c, u = cond.float(), uncond.float()
    return u + scale * (c - u)


def repetition_penalty(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' rule: the logit of every id seen so far (prompt included) is divided by the
    penalty when positive, multiplied when negative."""
    if penalty == 1.0:
        return scores
    picked = scores.gather(0, seen)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(0, seen, picked)


def top_k_filter(scores: torch.Tensor, k: int | None) -> torch.Tensor:
    if k is not None and k > 0:
        scores[scores < torch.topk(scores, k)[0][-1]] = NEG_INF
    return scores


def top_p_filter(scores: torch.Tensor, p: float | None) -> torch.Tensor:
    """Nucleus on the untempered logits: the first token crossing `p` stays, the top one always."""
    if p is not None and 0.0 < p < 1.0:
        sorted_scores, order = torch.sort(scores.unsqueeze(0), descending=True)
        cumulative = torch.cumsum(torch.softmax(sorted_scores.float(), dim=-1), dim=-1)
        drop = cumulative > p
        drop[..., 1:] = drop[..., :-1].clone()
        drop[..., 0] = False
        scores[drop.scatter(1, order, drop)[0]] = NEG_INF
    return scores


def draw(scores: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    if temperature > 0:
        probs = torch.softmax(scores.float().unsqueeze(0) / temperature, dim=-1)
        return int(torch.multinomial(probs, num_samples=1, generator=generator)[0, 0])
    return int(torch.argmax(scores))
