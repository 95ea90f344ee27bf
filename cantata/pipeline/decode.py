"""Latents -> 48 kHz stereo waveform (model.md §8).

Tiling follows the official overlap-discard scheme (each window decoded with `overlap` frames
of context on both sides, the context audio thrown away, no crossfade). The overlap covers the
decoder's receptive field, so tiles give the same samples as one pass (tested to fp32 noise);
tiling only bounds memory. Unlike the official fixed 128–512-frame windows, the window here is
as large as memory allows (the whole song on CPU and on roomy GPUs): fewer, longer windows
decode less overlap twice, and an out-of-memory error halves the window and tries again.
"""

from __future__ import annotations

import math

import torch

from ..models.vae import hop_length

NORMALIZE_DBFS = -1.0
OVERLAP = 64
MIN_OVERLAP = 4


MIN_CHUNK = 128
# Peak decoder activations per audio sample, 2-byte dtypes (the 48 kHz stage holds a few
# 128-channel tensors at once); fp32 doubles it. Only a fraction of free memory is planned for.
BYTES_PER_SAMPLE = 2048
MEMORY_SHARE = 0.6


def auto_chunk_frames(vae, frames: int) -> int:
    """Frames per window: everything at once when memory allows."""
    param = next(vae.parameters())
    if param.device.type != "cuda":
        return frames
    free, _ = torch.cuda.mem_get_info(param.device)
    per_frame = BYTES_PER_SAMPLE * max(1, param.element_size() // 2) * hop_length(vae)
    return max(MIN_CHUNK, min(frames, int(free * MEMORY_SHARE / per_frame)))


def _decode(vae, z: torch.Tensor) -> torch.Tensor:
    return vae.decode(z).sample


@torch.no_grad()
def tiled_decode(vae, latents: torch.Tensor, chunk: int, overlap: int = OVERLAP) -> torch.Tensor:
    """`[1, 64, T]` -> `[1, 2, T·hop]`, decoding windows of `chunk` frames."""
    frames = latents.shape[-1]
    while chunk - 2 * overlap <= 0 and overlap > MIN_OVERLAP:
        overlap //= 2
    if frames <= chunk:
        return _decode(vae, latents)
    stride = chunk - 2 * overlap
    pieces, hop = [], None
    for i in range(math.ceil(frames / stride)):
        core_lo, core_hi = i * stride, min((i + 1) * stride, frames)
        win_lo, win_hi = max(0, core_lo - overlap), min(frames, core_hi + overlap)
        audio = _decode(vae, latents[:, :, win_lo:win_hi])
        hop = hop or audio.shape[-1] / (win_hi - win_lo)
        cut_lo = int(round((core_lo - win_lo) * hop))
        cut_hi = int(round((win_hi - core_hi) * hop))
        pieces.append(audio[:, :, cut_lo: audio.shape[-1] - cut_hi if cut_hi else None])
    return torch.cat(pieces, dim=-1)


def decode_latents(vae, latents: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """`[B, T, 64]` (any dtype/device) -> `[B, 2, samples]` float32 on CPU, items one at a time."""
    vae_param = next(vae.parameters())
    out = []
    for item in latents:
        z = item.T.unsqueeze(0).to(device=vae_param.device, dtype=vae_param.dtype)
        window = chunk or auto_chunk_frames(vae, z.shape[-1])
        while True:
            try:
                out.append(tiled_decode(vae, z, window).float().cpu())
                break
            except torch.cuda.OutOfMemoryError:
                if window <= MIN_CHUNK:
                    raise
                torch.cuda.empty_cache()
                window = max(MIN_CHUNK, window // 2)
    return torch.cat(out, dim=0)


def finish_audio(audio: torch.Tensor, normalize_dbfs: float | None = NORMALIZE_DBFS) -> torch.Tensor:
    """Anti-clip (divide by the peak when it exceeds 1), then peak-normalize each item.

    With `normalize_dbfs=None` only the anti-clip step runs (the official decode output).
    """
    out = []
    for item in audio:
        peak = item.abs().max()
        if peak > 1.0:
            item = item / peak
            peak = item.abs().max()
        if normalize_dbfs is not None and peak > 0:
            item = item * (10 ** (normalize_dbfs / 20) / peak)
        out.append(item)
    return torch.stack(out)


def splice_source(audio: torch.Tensor, splice) -> torch.Tensor:
    """Keep the original waveform outside the regenerated window (linear crossfades at its
    edges), so the untouched part carries no VAE round-trip error (model.md §5.3)."""
    n = min(audio.shape[-1], splice.source.shape[-1])
    start, end = max(0, min(splice.start, n)), max(0, min(splice.end, n))
    end = max(start, end)
    mask = torch.zeros(n)
    mask[start:end] = 1.0
    cf = splice.crossfade
    if cf > 0:
        lo, hi = max(start - cf, 0), min(end + cf, n)
        if start > lo:
            mask[lo:start] = torch.linspace(0.0, 1.0, start - lo + 2)[1:-1]
        if hi > end:
            mask[end:hi] = torch.linspace(1.0, 0.0, hi - end + 2)[1:-1]
    out = audio.clone()
    out[..., :n] = mask * audio[..., :n] + (1.0 - mask) * splice.source[:, :n].to(audio.dtype)
    return out
