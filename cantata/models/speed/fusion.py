"""Fused projections: q/k/v (self attention), k/v (cross attention) and gate/up (MLP) as one
matmul each, built from the official separate weights at load.

The separate modules stay where they are (same paths, same classes), their weights turned into
views of the fused weight: no memory is added, adapters still find and hook `to_q`, `gate_proj`,
... by name, and whenever such a hook is present the separate modules run instead of the fused
one (`attention.hooked`). Moving the DiT between devices afterwards (`.to()`) copies the views
apart and doubles those weights: fuse after placing the model (`memory.apply_tier` does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.transformers.ace_step_transformer import AceStepMLP
from torch import nn

from .attention import hooked
from .quant import Int8Linear


def concat_linears(parts: list[nn.Linear]) -> nn.Linear:
    """One linear computing `cat([p(x) for p in parts], -1)`; `parts` now view its storage."""
    weight = torch.cat([p.weight.detach() for p in parts])
    bias = None if parts[0].bias is None else torch.cat([p.bias.detach() for p in parts])
    if isinstance(parts[0], Int8Linear):
        fused = Int8Linear(weight, torch.cat([p.weight_scale for p in parts]), bias)
    else:
        fused = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
        fused.weight = nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            fused.bias = nn.Parameter(bias, requires_grad=False)
    row = 0
    for p in parts:
        rows = slice(row, row + p.out_features)
        p.weight = nn.Parameter(fused.weight[rows], requires_grad=False)
        if bias is not None:
            p.bias = nn.Parameter(fused.bias[rows], requires_grad=False)
        if isinstance(p, Int8Linear):
            p.weight_scale = fused.weight_scale[rows]
        row += p.out_features
    return fused


# The fused modules' names (quantizing skips them; fusing again rebuilds them from the parts).
FUSED_NAMES = ("to_qkv", "to_kv", "gate_up")


class FusedSwiGLU(nn.Module):
    """diffusers' `AceStepMLP` (`down(silu(gate(x)) * up(x))`) with gate and up in one matmul."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj
        self.gate_up = concat_linears([self.gate_proj, self.up_proj])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hooked(self.gate_proj, self.up_proj):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


def fuse_projections(transformer: nn.Module) -> None:
    """Fuse every block's projections from their separate modules. Fusing again rebuilds the
    fused weights from the parts (after the parts were quantized, say); the old ones are freed."""
    for layer in transformer.layers:
        sa, ca = layer.self_attn, layer.cross_attn
        sa.to_qkv = concat_linears([sa.to_q, sa.to_k, sa.to_v])
        ca.to_kv = concat_linears([ca.to_k, ca.to_v])
        if isinstance(layer.mlp, FusedSwiGLU):
            layer.mlp.gate_up = concat_linears([layer.mlp.gate_proj, layer.mlp.up_proj])
        else:
            layer.mlp = FusedSwiGLU(layer.mlp)


def unfuse_projections(transformer: nn.Module) -> None:
    """Back to the separate modules (their weights stay views of one storage each: same bytes)."""
    for layer in transformer.layers:
        for attn, name in ((layer.self_attn, "to_qkv"), (layer.cross_attn, "to_kv")):
            if hasattr(attn, name):
                delattr(attn, name)
        if isinstance(layer.mlp, FusedSwiGLU):
            fused = layer.mlp
            with torch.device("meta"):
                mlp = AceStepMLP(fused.gate_proj.in_features, fused.gate_proj.out_features)
            mlp.gate_proj, mlp.up_proj, mlp.down_proj = fused.gate_proj, fused.up_proj, fused.down_proj
            layer.mlp = mlp
