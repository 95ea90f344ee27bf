"""The DiT forward the sampler calls: one batch of items of any lengths, with the speed switches.

diffusers' `AceStepTransformer1DModel.forward` takes no padding masks (the official model uses
none), so items of different lengths cannot share a batch through it without changing each
other's output: padded frames would be attended to, and so would padded condition tokens. The
masked forward here runs the same submodules in the same order, adding key masks for the padded
frames (in both the sliding and the full self-attention layers) and for the padded condition
tokens (cross attention). Every item then computes exactly what it computes alone; only the
summation order of the batched kernels differs.

The speed switches installed on the transformer (`cantata.models.speed.apply_speed`) choose the
masks and kernels (`speed/masks.py`) and whether lengths are padded up to buckets. With every
switch off an unpadded batch goes through diffusers' forward unchanged (the parity path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel, _ace_step_rotary_freqs

from .speed.apply import speed_options
from .speed.buckets import bucket_frames, bucket_tokens
from .speed.masks import layer_masks


def dit_forward(tr: AceStepTransformer1DModel, x: torch.Tensor, t: torch.Tensor, enc: torch.Tensor,
                context: torch.Tensor, frames: torch.Tensor | None = None,
                enc_lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Velocity for `x` [B, T, 64]. With `frames`, item b is valid on its first `frames[b]`
    frames (zero past them in `x` and `context`, as the solo forward zero-pads an odd length);
    with `enc_lengths`, its condition on the first `enc_lengths[b]` tokens."""
    options = speed_options(tr)
    length = x.shape[1]
    if options.bucketing:
        x, context, frames = _pad_to(x, context, frames, bucket_frames(length))
        enc, enc_lengths = _pad_condition(enc, enc_lengths, bucket_tokens(enc.shape[1]))
    if options.attention == "dense" and frames is None and enc_lengths is None:
        return tr(x, t, t, enc, context).sample
    return masked_forward(tr, x, t, enc, context, frames, enc_lengths, options.attention)[:, :length]


def _pad_to(x, context, frames, target: int):
    if target == x.shape[1]:
        return x, context, frames
    if frames is None:
        frames = torch.full((x.shape[0],), x.shape[1], device=x.device)
    pad = (0, 0, 0, target - x.shape[1])
    return F.pad(x, pad), F.pad(context, pad), frames


def _pad_condition(enc, enc_lengths, target: int):
    if target == enc.shape[1]:
        return enc, enc_lengths
    if enc_lengths is None:
        enc_lengths = torch.full((enc.shape[0],), enc.shape[1], device=enc.device)
    return F.pad(enc, (0, 0, 0, target - enc.shape[1])), enc_lengths


def masked_forward(tr: AceStepTransformer1DModel, x: torch.Tensor, t: torch.Tensor, enc: torch.Tensor,
                   context: torch.Tensor, frames: torch.Tensor | None, enc_lengths: torch.Tensor | None,
                   attention: str = "dense") -> torch.Tensor:
    """diffusers' forward with the masks of `attention` (`speed.masks`) for the given lengths."""
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
    token_lengths = None if frames is None else (frames + p - 1) // p
    masks = layer_masks(attention, tokens, tr.config.sliding_window, token_lengths, enc.shape[1], enc_lengths,
                        h.dtype, h.device)
    rope = _ace_step_rotary_freqs(tokens, tr.head_dim, tr.rope_theta, h.device, h.dtype)

    for kind, layer in zip(tr.layer_types, tr.layers):
        h = layer(hidden_states=h, position_embeddings=rope, temb=proj,
                  attention_mask=masks.self_attention(kind), encoder_hidden_states=enc,
                  encoder_attention_mask=masks.cross)

    shift, scale = (tr.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
    h = (tr.norm_out(h) * (1 + scale) + shift).type_as(h)
    return tr.proj_out_conv(h.transpose(1, 2)).transpose(1, 2)[:, :length]
