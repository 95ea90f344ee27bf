"""Length buckets: the handful of shapes a compiled DiT sees.

A server gets every duration from 10 to 600 s and every lyric length; compiled kernels (and CUDA
graphs) are specialised per shape. With bucketing on, the DiT forward pads the latent frames and
the condition tokens up to the next bucket and masks the padding (`padded_dit.dit_forward`), so
each item still computes exactly what it computes alone (tested within 1e-5).
"""

from __future__ import annotations

import bisect

# Latent frames (25 per second): every 15 s up to 2 minutes, then coarser. Worst padding is
# 25 % (a 60.04 s song in the 75 s bucket), the typical 30/60/75/120/240 s songs pay nothing.
FRAME_BUCKETS = tuple(25 * s for s in (15, 30, 45, 60, 75, 90, 105, 120, 150, 180, 210, 240, 300, 360, 420, 480, 540, 600))
# Packed condition tokens (lyrics up to 2048 + caption up to 256 + 1 timbre token).
TOKEN_BUCKETS = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 2560)


def _bucket(value: int, buckets: tuple[int, ...], multiple: int) -> int:
    i = bisect.bisect_left(buckets, value)
    if i < len(buckets):
        return buckets[i]
    return -(-value // multiple) * multiple  # past the table: round up, still a few shapes


def bucket_frames(frames: int) -> int:
    """The padded latent length for `frames` (>= frames)."""
    return _bucket(frames, FRAME_BUCKETS, 25 * 60)


def bucket_tokens(tokens: int) -> int:
    """The padded condition length for `tokens` (>= tokens)."""
    return _bucket(tokens, TOKEN_BUCKETS, 512)
