"""Waveform -> latents with the VAE encoder (model.md §8), and reference-audio preparation (§1.3).

Deliberate difference from the official code: it samples the VAE posterior (and picks the
reference segments) from the global RNG, so the same request gives different audio every time.
Here both are drawn from a generator seeded with the request's seed, so a request is repeatable.
"""

from __future__ import annotations

import math
import random

import torch

from .cancel import CancelCheck
from .request import SAMPLE_RATE
from .tiling import overlap_tiles

OVERLAP_SAMPLES = 2 * SAMPLE_RATE
REFERENCE_SECONDS = 30
SEGMENT_SECONDS = 10
SILENT_PEAK = 1e-6


def auto_chunk_samples(device: torch.device) -> int:
    """The official rule: 30 s windows, 15 s on small (<= 8 GB) or no GPUs."""
    if device.type == "cuda":
        total_gb = torch.cuda.get_device_properties(device).total_memory / 2**30
        return SAMPLE_RATE * (30 if total_gb > 8 else 15)
    return SAMPLE_RATE * 15


@torch.no_grad()
def vae_encode(vae, audio: torch.Tensor, generator: torch.Generator, chunk: int | None = None,
               overlap: int = OVERLAP_SAMPLES, cancelled: CancelCheck | None = None) -> torch.Tensor:
    """`[2, samples]` float in [-1, 1] at 48 kHz -> `[1, frames, 64]` latents (model dtype).

    Overlap-discard tiling as the official encoder: windows of `chunk` samples with `overlap`
    (2 s) of context on each side, the context latents thrown away; the cancel check runs before
    each window.
    """
    param = next(vae.parameters())
    chunk = chunk or auto_chunk_samples(param.device)

    def encode(piece: torch.Tensor) -> torch.Tensor:
        dist = vae.encode(piece.to(device=param.device, dtype=param.dtype)).latent_dist
        return dist.sample(generator=generator)

    audio = audio.clamp(-1, 1).unsqueeze(0)
    return overlap_tiles(encode, audio, chunk, overlap, cancelled, "VAE encode window").transpose(1, 2)


def reference_clip(audio: torch.Tensor, rng: random.Random) -> torch.Tensor | None:
    """30 s of timbre reference: one 10 s segment from each third of the track (tiled when the
    track is shorter than 30 s), segment offsets from `rng`. None for a silent reference."""
    if audio.abs().max() < SILENT_PEAK:
        return None
    target, seg = REFERENCE_SECONDS * SAMPLE_RATE, SEGMENT_SECONDS * SAMPLE_RATE
    if audio.shape[-1] < target:
        audio = audio.repeat(1, math.ceil(target / audio.shape[-1]))
    total = audio.shape[-1]
    third = total // 3
    starts = [rng.randint(0, max(0, third - seg)),
              third + rng.randint(0, max(0, third - seg)),
              2 * third + rng.randint(0, max(0, total - 2 * third - seg))]
    return torch.cat([audio[:, s:s + seg] for s in starts], dim=-1)
