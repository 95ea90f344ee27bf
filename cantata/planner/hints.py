"""Audio codes -> the DiT's 25 Hz semantic hints, through the DiT's own FSQ and detokenizer
(lm.md §6.2). The path itself lives with the other context builders in
`cantata.pipeline.tasks` (`codes_hints`, beside `cover_hints`); these are the one-request forms."""

from __future__ import annotations

import torch

from ..pipeline.tasks import codes_hints, quantize_codes


def quantized_codes(dit, codes: list[int]) -> torch.Tensor:
    """Code values `[N]` -> FSQ output `[1, N, fsq_dim]` (5 Hz) in the DiT's dtype."""
    return quantize_codes(dit.audio_tokenizer, [codes], dit.dtype)


def codes_to_hints(dit, codes: list[int]) -> torch.Tensor:
    """Code values `[N]` -> hints `[1, 5N, 64]` (25 Hz), the source half of a cover's context."""
    return codes_hints(dit.audio_tokenizer, dit.detokenizer, [codes], dit.dtype)
