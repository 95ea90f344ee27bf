"""Qwen3-Embedding-0.6B: the caption encoder, and the embedding table the lyrics are looked up in."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Qwen3Model


def load_text_encoder(path: Path, device: torch.device, dtype: torch.dtype) -> tuple[Qwen3Model, PreTrainedTokenizerBase]:
    """The model class is fixed (no `trust_remote_code`, no `auto_map` lookup)."""
    model = Qwen3Model.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    model = model.to(device).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer
