"""What each task feeds the DiT as context (model.md §1.7, §5).

The context is `[source-or-hints (64) | chunk mask (64)]` per frame. The chunk mask is 1.0
everywhere for every task in the official default ("auto") mode, repaint included: the window is
signalled only by silence in the source channels (parity pitfall 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.vocabulary import AGGRESSIVE, BALANCED, CONSERVATIVE
from .latents import HOP, SAMPLE_RATE, silence

REPAINT_MODES = {
    # mode: (injection ratio, latent crossfade frames, waveform crossfade seconds), as functions
    # of the "balanced" strength σ.
    CONSERVATIVE: lambda s: (1.0, 25, 0.05),
    BALANCED: lambda s: (1.0 - s, round(25 * (1.0 - s)), 0.05 * (1.0 - s)),
    AGGRESSIVE: lambda s: (0.0, 0, 0.0),
}


def context(src: torch.Tensor) -> torch.Tensor:
    """`[B, T, 64]` source channels + an all-ones chunk mask -> `[B, T, 128]`."""
    return torch.cat([src, torch.ones_like(src)], dim=-1)


def text2music_source(silence_latent: torch.Tensor, frames: int, batch: int, dtype: torch.dtype) -> torch.Tensor:
    return silence(silence_latent, frames).to(dtype).expand(batch, -1, -1)


@torch.no_grad()
def cover_hints(audio_tokenizer, detokenizer, source: torch.Tensor, silence_latent: torch.Tensor) -> torch.Tensor:
    """Source latents -> FSQ round trip at 5 Hz -> detokenized 25 Hz "semantic hints".

    The source is right-padded to a multiple of the pool window with silence from frame 0, and
    the hints are cropped back to the source length.
    """
    window = audio_tokenizer.pool_window_size
    frames = source.shape[1]
    pad = (-frames) % window
    if pad:
        source = torch.cat([source, silence(silence_latent, pad).to(source.dtype).expand(source.shape[0], -1, -1)], 1)
    patches = source.reshape(source.shape[0], -1, window, source.shape[-1])
    quantized, _ = audio_tokenizer(patches)
    return detokenizer(quantized)[:, :frames]


@torch.no_grad()
def quantize_codes(audio_tokenizer, codes: list[list[int]], dtype: torch.dtype) -> torch.Tensor:
    """Code values `[B][N]` (the planner's audio codes) -> FSQ output `[B, N, fsq_dim]` at 5 Hz.

    Indices past the codebook are clamped into it, as the official handler does."""
    quantizer = audio_tokenizer.quantizer
    device = next(audio_tokenizer.parameters()).device
    indices = torch.tensor(codes, dtype=torch.long, device=device).clamp(0, quantizer.codebook_size - 1)
    return quantizer.get_output_from_indices(indices.view(len(codes), -1, 1)).to(dtype)


@torch.no_grad()
def codes_hints(audio_tokenizer, detokenizer, codes: list[list[int]], dtype: torch.dtype) -> torch.Tensor:
    """Code values `[B][N]` -> detokenized 25 Hz "semantic hints" `[B, 5N, 64]`: the second half of
    `cover_hints`, entered at the codes instead of at the source latents (lm.md §6.2)."""
    return detokenizer(quantize_codes(audio_tokenizer, codes, dtype))


@dataclass
class RepaintWindow:
    start: int  # first regenerated frame
    end: int  # one past the last
    injection_ratio: float
    crossfade_frames: int
    wav_crossfade_s: float


def repaint_window(start_s: float | None, end_s: float | None, frames: int, mode: str, strength: float) -> RepaintWindow:
    """Seconds -> frame window, clamped like the official code (floors of seconds·48000 // 1920)."""
    s = int((start_s or 0.0) * SAMPLE_RATE // HOP)
    e = frames if end_s is None else int(end_s * SAMPLE_RATE // HOP)
    s = min(max(s, 0), frames - 1)
    e = min(max(e, s + 1), frames)
    ratio, cf, wav_cf = REPAINT_MODES[mode](strength)
    return RepaintWindow(s, e, ratio, cf, wav_cf)


def repaint_source(source: torch.Tensor, window: RepaintWindow, silence_latent: torch.Tensor) -> torch.Tensor:
    """The source with the window overwritten by the silence latent at the same frames."""
    src = source.clone()
    src[:, window.start:window.end] = silence(silence_latent, window.end)[:, window.start:].to(src.dtype)
    return src


def repaint_mask(window: RepaintWindow, batch: int, frames: int, device: torch.device) -> torch.Tensor:
    mask = torch.zeros((batch, frames), dtype=torch.bool, device=device)
    mask[:, window.start:window.end] = True
    return mask
