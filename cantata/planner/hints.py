"""Audio codes -> the DiT's 25 Hz semantic hints, through the DiT's own FSQ and detokenizer
(lm.md §6.2): the second half of the path `cantata.pipeline.tasks.cover_hints` takes from
source latents, entered at the code values instead of at the latents."""

from __future__ import annotations

import torch

from .tokenizer import VALID_CODES


@torch.no_grad()
def quantized_codes(dit, codes: list[int]) -> torch.Tensor:
    """Code values `[N]` -> FSQ output `[1, N, fsq_dim]` (5 Hz) in the DiT's dtype."""
    indices = torch.tensor(codes, dtype=torch.long, device=dit.device).clamp(0, VALID_CODES - 1)
    return dit.audio_tokenizer.quantizer.get_output_from_indices(indices.view(1, -1, 1)).to(dit.dtype)


@torch.no_grad()
def codes_to_hints(dit, codes: list[int]) -> torch.Tensor:
    """Code values `[N]` -> hints `[1, 5N, 64]` (25 Hz), the source half of a cover's context."""
    return dit.detokenizer(quantized_codes(dit, codes))
