"""Prompt strings -> the packed condition sequence the DiT cross-attends to (model.md §1.1–1.4, §1.8).

Official details that matter for parity: each prompt is tokenized alone and right-padded by hand;
the caption goes through the full Qwen3 stack *without* an attention mask, the lyrics only
through its embedding table; the packed sequence is [valid lyric tokens, timbre token(s), valid
caption tokens, padding], and the DiT sees the padding too (it uses no mask).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder
from transformers import PreTrainedTokenizerBase, Qwen3Model

CAPTION_MAX_TOKENS = 256
LYRIC_MAX_TOKENS = 2048
#: Caption encodings kept for repeated captions (a server sees the same prompt again and again:
#: retries, several results, presets). At most 256 × 1024 values each: a few MB in all.
CAPTION_CACHE_ENTRIES = 64


@dataclass
class Encoded:
    states: torch.Tensor  # [B, L, Denc] packed: lyric tokens, timbre, caption tokens, padding
    mask: torch.Tensor  # [B, L] 1 on the valid (packed-first) positions
    caption_tokens: torch.Tensor  # [B] valid caption tokens per item


class Conditioner:
    """Owns the text side of a loaded model: tokenizer, Qwen3, and the DiT's condition encoder."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, text_encoder: Qwen3Model,
                 condition_encoder: AceStepConditionEncoder):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.condition_encoder = condition_encoder
        self._captions: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()  # (prompt, width) -> states

    @property
    def device(self) -> torch.device:
        return self.condition_encoder.null_condition_emb.device

    def tokenize(self, texts: list[str], max_length: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-item tokenization, then right padding with the pad id (mask 0) to the batch max
        (or to `width`, cutting longer rows: see `encode`)."""
        rows = [self.tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
        width = width or max(len(r) for r in rows)
        rows = [r[:width] for r in rows]
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def caption_states(self, prompts: list[str], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Qwen3 last_hidden_state over the padded ids, no attention mask (the model is causal).

        Rows are independent (no mask, no cross-row attention), but a row's padded positions
        depend on how far it is padded, so a row is cached by (prompt, width) and only the rows
        not seen at that width go through Qwen3 (in one batch, in their order; the cached rows
        come from earlier batches, equal up to float summation order)."""
        ids, mask = self.tokenize(prompts, CAPTION_MAX_TOKENS, width)
        keys = [(p, ids.shape[1]) for p in prompts]
        missing = [i for i, k in enumerate(keys) if k not in self._captions]
        if missing:
            fresh = self.text_encoder(input_ids=ids[missing]).last_hidden_state
            for row, i in enumerate(missing):
                self._remember(keys[i], fresh[row])
        for key in keys:
            self._captions.move_to_end(key)
        return torch.stack([self._captions[k] for k in keys]), mask

    def _remember(self, key: tuple[str, int], states: torch.Tensor) -> None:
        self._captions[key] = states
        while len(self._captions) > CAPTION_CACHE_ENTRIES:
            self._captions.popitem(last=False)

    @torch.no_grad()
    def lyric_states(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding lookup only -- the lyrics never pass through the Qwen3 layers."""
        ids, mask = self.tokenize(prompts, LYRIC_MAX_TOKENS)
        return self.text_encoder.get_input_embeddings()(ids), mask

    @torch.no_grad()
    def encode(self, caption_prompts: list[str], lyric_prompts: list[str], timbre: torch.Tensor,
               timbre_order: torch.Tensor, caption_width: int | None = None) -> Encoded:
        """`timbre` is [refs, frames, 64] packed over the batch; `timbre_order` gives each
        reference's item index.

        `caption_width` forces the caption token count: the official cover switch tokenizes the
        text2music caption but pads or *cuts* it to the cover caption's width (it loses its last
        token, the newline after <|endoftext|>). We reproduce that so covers keep parity.
        """
        dtype = self.condition_encoder.null_condition_emb.dtype
        text, text_mask = self.caption_states(caption_prompts, caption_width)
        lyric, lyric_mask = self.lyric_states(lyric_prompts)
        states, mask = self.condition_encoder(
            text_hidden_states=text.to(dtype),
            text_attention_mask=text_mask,
            lyric_hidden_states=lyric.to(dtype),
            lyric_attention_mask=lyric_mask,
            refer_audio_acoustic_hidden_states_packed=timbre.to(dtype),
            refer_audio_order_mask=timbre_order,
        )
        return Encoded(states, mask, text_mask.sum(dim=1))

    def null_states(self, like: torch.Tensor) -> torch.Tensor:
        """The official unconditional branch: `null_condition_emb` at every position."""
        return self.condition_encoder.null_condition_emb.to(like.dtype).expand_as(like)

    @torch.no_grad()
    def negative_states(self, negative_prompt: str, positive: Encoded) -> torch.Tensor:
        """Cantata's unconditional branch when a negative prompt is given.

        The official model has no negative prompt; it was trained to read `null_condition_emb`
        as "no condition". We keep that null vector at the lyric, timbre and padding positions
        and put the encoded negative caption where the positive caption sits (after the valid
        lyric + timbre tokens). So c − u still pushes towards the lyrics and timbre as in the
        official guidance, and the caption part now pushes away from the negative prompt
        rather than from nothing. `negative_prompt` is a full caption prompt (same instruction
        and metas as the positive one), projected by the same `text_projector`.
        """
        like = positive.states
        neg, _ = self.caption_states([negative_prompt])
        neg = self.condition_encoder.text_projector(neg.to(like.dtype))[0]  # [Ln, D]
        prefix = positive.mask.sum(dim=1) - positive.caption_tokens  # valid lyric + timbre tokens
        width = max(like.shape[1], int(prefix.max()) + neg.shape[0])
        out = self.condition_encoder.null_condition_emb.to(like.dtype).expand(like.shape[0], width, -1).clone()
        for b, start in enumerate(prefix.tolist()):
            out[b, start : start + neg.shape[0]] = neg
        return out
