"""The DiT forward for a batch of items of different lengths.

diffusers' `AceStepTransformer1DModel.forward` takes no padding masks (the official model uses
none), so items of different lengths cannot share a batch through it without changing each
other's output: padded frames would be attended to, and so would padded condition tokens. This
forward runs the same submodules in the same order, adding key masks for the padded frames (in
both the sliding and the full self-attention layers) and for the padded condition tokens (cross
attention). Every item then computes exactly what it computes alone; only the summation order of
the batched kernels differs. Used only when padding exists -- equal-length batches go through
diffusers' forward unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel, _ace_step_rotary_freqs


def _additive(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool mask (True = attend) -> additive mask (0 / most negative value)."""
    out = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
    return out.masked_fill_(~keep, torch.finfo(dtype).min)


def padded_forward(tr: AceStepTransformer1DModel, x: torch.Tensor, t: torch.Tensor, enc: torch.Tensor,
                   context: torch.Tensor, frames: torch.Tensor, enc_lengths: torch.Tensor) -> torch.Tensor:
    """Velocity for `x` [B, T, 64] where item b is valid on its first `frames[b]` frames and its
    condition on the first `enc_lengths[b]` tokens. Frames past an item's length must be zero in
    `x` and `context` (as the solo forward zero-pads an odd length)."""
    temb_t, proj_t = tr.time_embed(t)
    temb_r, proj_r = tr.time_embed_r(t - t)
    temb, proj = temb_t + temb_r, proj_t + proj_r

    h = torch.cat([context, x], dim=-1)
    length = h.shape[1]
    p = tr.patch_size
    if length % p:
        h = F.pad(h, (0, 0, 0, p - length % p))
    h = tr.proj_in_conv(h.transpose(1, 2)).transpose(1, 2)
    enc = tr.condition_embedder(enc)

    tokens = h.shape[1]
    pos = torch.arange(tokens, device=h.device)
    key_ok = pos[None, :] < ((frames + p - 1) // p)[:, None]  # [B, S]
    band = (pos[:, None] - pos[None, :]).abs() <= tr.config.sliding_window  # [S, S]
    full = _additive(key_ok[:, None, None, :], h.dtype)
    sliding = _additive(band[None, None] & key_ok[:, None, None, :], h.dtype)
    enc_ok = torch.arange(enc.shape[1], device=h.device)[None, :] < enc_lengths[:, None]
    cross = _additive(enc_ok[:, None, None, :], h.dtype)
    rope = _ace_step_rotary_freqs(tokens, tr.head_dim, tr.rope_theta, h.device, h.dtype)

    for kind, layer in zip(tr.layer_types, tr.layers):
        h = layer(hidden_states=h, position_embeddings=rope, temb=proj,
                  attention_mask=sliding if kind == "sliding_attention" else full,
                  encoder_hidden_states=enc, encoder_attention_mask=cross)

    shift, scale = (tr.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
    h = (tr.norm_out(h) * (1 + scale) + shift).type_as(h)
    return tr.proj_out_conv(h.transpose(1, 2)).transpose(1, 2)[:, :length]
