"""Latent lengths, silence padding and seeded noise, the way the official code makes them."""

from __future__ import annotations

import secrets

import torch

from .request import SAMPLE_RATE

FRAMES_PER_SECOND = 25
HOP = SAMPLE_RATE // FRAMES_PER_SECOND  # 1920 audio samples per latent frame
MIN_FRAMES = 128  # the official pipeline never samples fewer frames (short items are padded)


def duration_samples(seconds: float) -> int:
    """Official rounding: durations count in tenths of a second."""
    return int(round(seconds, 1) * SAMPLE_RATE)


def duration_frames(seconds: float) -> int:
    return duration_samples(seconds) // HOP


def silence(silence_latent: torch.Tensor, frames: int) -> torch.Tensor:
    """`[1, frames, 64]` of the silence latent *from frame 0*, tiled when longer than the file.

    Every pad in the official code (short items, batch padding, outpainting, the tokenizer's
    multiple-of-5 pad) starts at frame 0 of the silence latent, head included (pitfall 8).
    """
    have = silence_latent.shape[1]
    if frames <= have:
        return silence_latent[:, :frames]
    reps = -(-frames // have)
    return silence_latent.repeat(1, reps, 1)[:, :frames]


def pad_with_silence(latents: torch.Tensor, frames: int, silence_latent: torch.Tensor) -> torch.Tensor:
    """Right-pad `[B, T, 64]` to `frames` with silence from frame 0."""
    extra = frames - latents.shape[1]
    if extra <= 0:
        return latents
    pad = silence(silence_latent, extra).to(latents.dtype).expand(latents.shape[0], -1, -1)
    return torch.cat([latents, pad], dim=1)


def random_seed() -> int:
    """Seeds the caller did not fix; uint32 like the official UI, and returned with the result."""
    return secrets.randbelow(2**32)


def seeded_noise(seeds: list[int], frames: int, channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """One generator per item on the model device, `randn` of `[1, T, C]` in the model dtype.

    Exactly the official `prepare_noise` with a seed list, so seed s gives the same noise (and the
    same song) as the official pipeline on the same device and dtype (pitfall 7).
    """
    draws = []
    for s in seeds:
        g = torch.Generator(device=device).manual_seed(int(s))
        draws.append(torch.randn((1, frames, channels), generator=g, device=device, dtype=dtype))
    return torch.cat(draws, dim=0)
