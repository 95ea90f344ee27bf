"""Source and reference audio -> latents, with outpainting pads (model.md §5.3, §1.3)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .cancel import CancelCheck
from .encode import reference_clip, vae_encode
from .latents import HOP, silence
from .request import SAMPLE_RATE, SourceAudio

TIMBRE_FRAMES = 750  # 30 s of reference latents feed the timbre encoder


@dataclass
class Source:
    latents: torch.Tensor  # [1, T, 64] in the model dtype, outpainting pads included
    waveform: torch.Tensor | None  # [2, samples] float32 on CPU, padded alike (for the splice)
    offset: float  # seconds of left padding: source time t is at t + offset here
    samples: int  # audio samples to deliver: the source plus any outpainting


def load_source(src: SourceAudio, vae, silence_latent: torch.Tensor, generator: torch.Generator,
                pad_left: float = 0.0, pad_right: float = 0.0, cancelled: CancelCheck | None = None) -> Source:
    """Encode (or take the cached latents of) the source, outpainting pads added.

    A waveform is zero-padded (the pad encodes to silence, as officially); bare latents are padded
    with the silence latent from frame 0.
    """
    dtype, device = silence_latent.dtype, silence_latent.device
    if src.waveform is not None:
        wav = src.waveform.float().cpu()
        left, right = int(pad_left * SAMPLE_RATE), int(pad_right * SAMPLE_RATE)
        if left or right:
            wav = torch.nn.functional.pad(wav, (left, right))
        if src.latents is not None and not (left or right):
            latents = src.latents
        else:  # encoded from a whole number of frames, so the decode can be cut back exactly
            latents = vae_encode(vae, torch.nn.functional.pad(wav, (0, -wav.shape[-1] % HOP)), generator,
                                 cancelled=cancelled)
        return Source(_as_batch(latents).to(device, dtype), wav, pad_left, wav.shape[-1])
    if src.latents is None:
        raise ValueError("source audio needs a waveform or latents")
    lat = _as_batch(src.latents).to(device, dtype)
    left = int(pad_left * SAMPLE_RATE) // HOP
    right = int(pad_right * SAMPLE_RATE) // HOP
    parts = [silence(silence_latent, left)] if left else []
    parts += [lat] + ([silence(silence_latent, right)] if right else [])
    latents = torch.cat(parts, dim=1)
    return Source(latents, None, left * HOP / SAMPLE_RATE, latents.shape[1] * HOP)


def _as_batch(latents: torch.Tensor) -> torch.Tensor:
    return latents if latents.ndim == 3 else latents.unsqueeze(0)


def timbre_inputs(references: list[torch.Tensor], batch: int, vae, silence_latent: torch.Tensor,
                  seed: int, cancelled: CancelCheck | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed timbre-encoder input `[refs, 750, 64]` and each reference's item index.

    No (or only silent) references: the first 750 silence frames per item, never zeros (pitfall 9).
    Segment offsets and posterior samples come from `seed` (official: unseeded).
    """
    device = silence_latent.device
    rng = random.Random(seed)
    generator = torch.Generator(device=next(vae.parameters()).device).manual_seed(seed)
    clips = [c for c in (reference_clip(r.float().cpu(), rng) for r in references) if c is not None]
    if not clips:
        return silence(silence_latent, TIMBRE_FRAMES).expand(batch, -1, -1), torch.arange(batch, device=device)
    latents = torch.cat([vae_encode(vae, c, generator, cancelled=cancelled)[:, :TIMBRE_FRAMES] for c in clips])
    latents = latents.to(device, silence_latent.dtype)
    packed = latents.repeat(batch, 1, 1)
    order = torch.arange(batch, device=device).repeat_interleave(len(clips))
    return packed, order
