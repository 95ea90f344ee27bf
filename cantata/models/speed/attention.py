"""The attention processor of the "sdpa" and "flex" kinds (diffusers' processor serves "dense").

Same projections, per-head RMSNorms and RoPE as diffusers' `AceStepAttnProcessor2_0`; only the
attention call differs: `scaled_dot_product_attention` for no / boolean masks (PyTorch picks the
flash or memory-efficient kernel), FlexAttention for a `BlockMask`. With fused projections it
runs one matmul for q/k/v (self attention) or k/v (cross attention) -- unless a forward hook sits
on one of the separate projections (an adapter, `use_adapters`), then the separate modules run so
that the hook sees exactly its own module's input and output.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.ace_step_transformer import AceStepAttnProcessor2_0
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, flex_attention

_compiled_flex = None


def hooked(*modules: nn.Module) -> bool:
    """True when any module carries forward hooks (adapters act through them)."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def _flex(q, k, v, block_mask, scale, gqa):
    """FlexAttention, compiled on CUDA (eager flex materializes the whole score matrix; inside a
    compiled block it is compiled with the block anyway)."""
    global _compiled_flex
    if q.device.type == "cuda" and not torch.compiler.is_compiling():
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        return _compiled_flex(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa)


def _project(attn: nn.Module, x: torch.Tensor, kv_input: torch.Tensor, is_cross: bool):
    q_width, kv_width = attn.heads * attn.head_dim, attn.kv_heads * attn.head_dim
    fused = getattr(attn, "to_kv" if is_cross else "to_qkv", None)
    if fused is None or hooked(attn.to_q, attn.to_k, attn.to_v):
        return attn.to_q(x), attn.to_k(kv_input), attn.to_v(kv_input)
    if is_cross:
        k, v = fused(kv_input).split([kv_width, kv_width], dim=-1)
        return attn.to_q(x), k, v
    return fused(x).split([q_width, kv_width, kv_width], dim=-1)


class KernelAttnProcessor:
    """Drop-in for diffusers' ACE-Step processor (same call signature)."""

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None, attention_mask=None,
                 image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        is_cross = attn.is_cross_attention and encoder_hidden_states is not None
        kv_input = encoder_hidden_states if is_cross else hidden_states
        q, k, v = _project(attn, hidden_states, kv_input, is_cross)
        q = attn.norm_q(q.unflatten(-1, (attn.heads, attn.head_dim)))
        k = attn.norm_k(k.unflatten(-1, (attn.kv_heads, attn.head_dim)))
        v = v.unflatten(-1, (attn.kv_heads, attn.head_dim))
        if not is_cross and image_rotary_emb is not None:
            q = apply_rotary_emb(q, image_rotary_emb, use_real=True, use_real_unbind_dim=-2, sequence_dim=1)
            k = apply_rotary_emb(k, image_rotary_emb, use_real=True, use_real_unbind_dim=-2, sequence_dim=1)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, L, D]
        gqa = attn.heads != attn.kv_heads
        if isinstance(attention_mask, BlockMask):
            out = _flex(q, k, v, attention_mask, attn.scaling, gqa)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=attn.scaling, enable_gqa=gqa)
        out = out.transpose(1, 2).flatten(2, 3).to(q.dtype)
        return attn.to_out[1](attn.to_out[0](out))


def install_attention(transformer: nn.Module, kind: str) -> None:
    """Every attention module of the DiT blocks gets diffusers' processor ("dense") or ours."""
    make = AceStepAttnProcessor2_0 if kind == "dense" else KernelAttnProcessor
    for layer in transformer.layers:
        layer.self_attn.set_processor(make())
        layer.cross_attn.set_processor(make())
