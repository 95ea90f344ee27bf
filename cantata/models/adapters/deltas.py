"""The weight updates adapters add to one module, applied to activations, never merged.

Each delta computes `ΔW x` for the rows it is given, from its factors: a LoRA as `B (A x)`, a
LoKr linear through its Kronecker factors (`W1 X W2ᵀ` on the input viewed as a matrix, never the
full `kron(W1, W2)`), so the base weights stay untouched and any mix of adapters can act on
different rows of one batch. Only LoKr convolutions (the decoder's single `proj_in` conv) keep
their small delta kernel materialized.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

Factor = float | torch.Tensor  # the user weight: one number, or one per row ([n, 1, ...])


@dataclass
class LowRank:
    """`scale · B (A x)`: PEFT `lora_A`/`lora_B` (or kohya `lora_down`/`lora_up`)."""

    down: torch.Tensor  # [r, in]
    up: torch.Tensor  # [out, r]
    scale: float  # alpha / r (alpha / sqrt(r) with rsLoRA), 1 where the file carries no alpha

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.up.shape[0], self.down.shape[1])

    def __call__(self, x: torch.Tensor, module: nn.Module, weight: Factor) -> torch.Tensor:
        # PEFT's order: lora_B(lora_A(x)) * scaling, with the user scale folded into scaling.
        return F.linear(F.linear(x, self.down), self.up) * (self.scale * weight)

    def to(self, device, dtype) -> "LowRank":
        return LowRank(self.down.to(device, dtype), self.up.to(device, dtype), self.scale)


@dataclass
class Kronecker:
    """`scale · kron(W1, W2) x` for a Linear; `W1` [a1, a2], `W2` [b1, b2], weight [a1·b1, a2·b2]."""

    w1: torch.Tensor
    w2: torch.Tensor
    scale: float  # the LoKr `c` of lora.md §3

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.w1.shape[0] * self.w2.shape[0], self.w1.shape[1] * self.w2.shape[1])

    def __call__(self, x: torch.Tensor, module: nn.Module, weight: Factor) -> torch.Tensor:
        (a1, a2), (b1, b2) = self.w1.shape, self.w2.shape
        # kron(W1, W2)[i·b1 + k, j·b2 + l] = W1[i, j] W2[k, l], so with X[j, l] = x[j·b2 + l]:
        # (kron(W1, W2) x)[i·b1 + k] = (W1 X W2ᵀ)[i, k].
        grid = x.reshape(*x.shape[:-1], a2, b2)
        out = torch.matmul(self.w1, torch.matmul(grid, self.w2.transpose(0, 1)))
        return out.reshape(*x.shape[:-1], a1 * b1) * (self.scale * weight)

    def to(self, device, dtype) -> "Kronecker":
        return Kronecker(self.w1.to(device, dtype), self.w2.to(device, dtype), self.scale)


@dataclass
class ConvKernel:
    """`scale · conv(x, ΔK)` with the module's stride/padding and no bias (LoKr on `proj_in`)."""

    kernel: torch.Tensor  # [out, in, k], kron(W1, W2) reshaped
    scale: float

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return tuple(self.kernel.shape)

    def __call__(self, x: torch.Tensor, module: nn.Module, weight: Factor) -> torch.Tensor:
        out = F.conv1d(x, self.kernel, None, module.stride, module.padding, module.dilation, module.groups)
        return out * (self.scale * weight)

    def to(self, device, dtype) -> "ConvKernel":
        return ConvKernel(self.kernel.to(device, dtype), self.scale)


Delta = LowRank | Kronecker | ConvKernel


@dataclass
class Adapter:
    """A loaded adapter: one delta per adapted module, keyed by the module's path in our
    transformer. Immutable once loaded; the user weight is chosen per use (`use_adapters`)."""

    name: str
    kind: str  # "lora" | "lokr"
    source: str  # the file or directory it was read from
    deltas: dict[str, Delta] = field(default_factory=dict)

    def to(self, device: torch.device, dtype: torch.dtype) -> "Adapter":
        return Adapter(self.name, self.kind, self.source, {p: d.to(device, dtype) for p, d in self.deltas.items()})

