"""The attention masks of one DiT forward, per attention kind (`options.ATTENTION_KINDS`).

ACE-Step's self-attention is bidirectional; even layers see a band |i - j| <= window, odd layers
everything; cross attention sees every condition token. Padding (items of a batch shorter than
the batch, or lengths padded up to a bucket) adds key masks. What each kind passes to attention:

| kind | full layer | sliding layer | cross |
|---|---|---|---|
| dense | additive key mask, or none | additive band (& keys) | additive key mask, or none |
| sdpa | none, or bool key mask | bool band (& keys) | none, or bool key mask |
| flex | as sdpa | FlexAttention BlockMask of the band (& keys) | as sdpa |

"dense" is the historical path, kept bit for bit. The boolean and block masks also let every
padded query see itself: a padded query far past an item's end has no key in its band, and a
fully masked row is NaN in SDPA -- which would reach valid rows through 0 · NaN in the next
layer. Valid queries always see themselves anyway, so this changes nothing they compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

Mask = object  # None | torch.Tensor (bool or additive) | BlockMask


@dataclass(frozen=True)
class LayerMasks:
    full: Mask
    sliding: Mask
    cross: Mask

    def self_attention(self, layer_type: str) -> Mask:
        return self.sliding if layer_type == "sliding_attention" else self.full


def _additive(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool mask (True = attend) -> additive mask (0 / most negative value)."""
    out = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
    return out.masked_fill_(~keep, torch.finfo(dtype).min)


def _band(tokens: int, window: int, device: torch.device) -> torch.Tensor:
    pos = torch.arange(tokens, device=device)
    return (pos[:, None] - pos[None, :]).abs() <= window  # [S, S]


def layer_masks(kind: str, tokens: int, window: int, token_lengths: torch.Tensor | None,
                enc_tokens: int, enc_lengths: torch.Tensor | None, dtype: torch.dtype,
                device: torch.device) -> LayerMasks:
    """Masks for `tokens` DiT tokens (valid: the first `token_lengths[b]`, all when None) and
    `enc_tokens` condition tokens (valid: the first `enc_lengths[b]`, all when None)."""
    key_ok = None if token_lengths is None else torch.arange(tokens, device=device)[None, :] < token_lengths[:, None]
    enc_ok = None if enc_lengths is None else torch.arange(enc_tokens, device=device)[None, :] < enc_lengths[:, None]
    band = _band(tokens, window, device)
    if kind == "dense":
        sliding = band[None, None] if key_ok is None else band[None, None] & key_ok[:, None, None, :]
        return LayerMasks(
            full=None if key_ok is None else _additive(key_ok[:, None, None, :], dtype),
            sliding=_additive(sliding, dtype),
            cross=None if enc_ok is None else _additive(enc_ok[:, None, None, :], dtype))
    full = None if key_ok is None else key_ok[:, None, None, :]
    cross = None if enc_ok is None else enc_ok[:, None, None, :]
    if kind == "flex":
        lengths = None if token_lengths is None else tuple(int(n) for n in token_lengths.tolist())
        return LayerMasks(full=full, sliding=band_block_mask(tokens, window, lengths, str(device)), cross=cross)
    if key_ok is None:
        return LayerMasks(full=None, sliding=band[None, None], cross=cross)
    eye = torch.eye(tokens, dtype=torch.bool, device=device)
    return LayerMasks(full=full, sliding=((band[None] & key_ok[:, None, :]) | eye)[:, None], cross=cross)


@lru_cache(maxsize=32)
def band_block_mask(tokens: int, window: int, lengths: tuple[int, ...] | None, device: str):
    """FlexAttention BlockMask of the band (and the key lengths), cached: a sampler asks for the
    same one at every step."""
    from torch.nn.attention.flex_attention import create_block_mask

    if lengths is None:
        def band(b, h, q, kv):
            return (q - kv).abs() <= window

        return create_block_mask(band, None, None, tokens, tokens, device=device)
    valid = torch.tensor(lengths, device=device)

    def band_and_keys(b, h, q, kv):
        return (((q - kv).abs() <= window) & (kv < valid[b])) | (q == kv)

    return create_block_mask(band_and_keys, len(lengths), None, tokens, tokens, device=device)
