"""Latents -> 48 kHz stereo waveform (model.md §8).

Tiling follows the official overlap-discard scheme (each window decoded with `overlap` frames
of context on both sides, the context audio thrown away, no crossfade). The overlap covers the
decoder's receptive field, so tiles give the same samples as one pass (tested to fp32 noise);
tiling only bounds memory. Unlike the official fixed 128–512-frame windows, the window here is
as large as memory allows (the whole song on CPU and on roomy GPUs): fewer, longer windows
decode less overlap twice, and an out-of-memory error halves the window and tries again.
"""

from __future__ import annotations

import torch

from ..models.vae import hop_length
from .cancel import CancelCheck
from .crossfade import crossfade, window_weights
from .tiling import overlap_tiles

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


@torch.no_grad()
def tiled_decode(vae, latents: torch.Tensor, chunk: int, overlap: int = OVERLAP,
                 cancelled: CancelCheck | None = None) -> torch.Tensor:
    """`[1, 64, T]` -> `[1, 2, T·hop]`, decoding windows of `chunk` frames (the cancel check runs
    before each window)."""
    while chunk - 2 * overlap <= 0 and overlap > MIN_OVERLAP:
        overlap //= 2
    return overlap_tiles(lambda z: vae.decode(z).sample, latents, chunk, overlap, cancelled, "VAE decode window")


def decode_latents(vae, latents: torch.Tensor, chunk: int | None = None,
                   cancelled: CancelCheck | None = None) -> torch.Tensor:
    """`[B, T, 64]` (any dtype/device) -> `[B, 2, samples]` float32 on CPU, items one at a time."""
    vae_param = next(vae.parameters())
    out = []
    for item in latents:
        z = item.T.unsqueeze(0).to(device=vae_param.device, dtype=vae_param.dtype)
        window = chunk or auto_chunk_frames(vae, z.shape[-1])
        while True:
            try:
                out.append(tiled_decode(vae, z, window, cancelled=cancelled).float().cpu())
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
    weights = window_weights(n, start, end, splice.crossfade)
    out = audio.clone()
    out[..., :n] = crossfade(audio[..., :n], splice.source[:, :n].to(audio.dtype), weights)
    return out
