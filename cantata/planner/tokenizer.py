"""The planner tokenizer: Qwen3 byte-level BPE + 65 535 `<|audio_code_k|>` tokens (lm.md §1.3).

Read with the `tokenizers` library straight from `tokenizer.json`, which holds every token, id
and special flag. (transformers 5 rebuilds its added-token table from `tokenizer_config.json`
and would drop the audio codes when that file is the slim one.) Qwen inserts no BOS/EOS, and
special-token strings inside a prompt become their ids.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

AUDIO_CODE_BASE = 151669  # id of <|audio_code_0|>
VALID_CODES = 64000  # FSQ codebook 8·8·8·5·5·5; codes 64 000 … 65 534 exist but are never valid
THINK = "<think>"
THINK_END = "</think>"


class PlannerTokenizer:
    def __init__(self, tokenizer: Tokenizer, eos_token: str, pad_token: str):
        self._tok = tokenizer
        self.eos_id = self.token_id(eos_token)  # <|im_end|> 151645
        self.pad_id = self.token_id(pad_token)  # <|endoftext|> 151643 (generation stops on it too)
        self.think_end_id = self.token_id(THINK_END)
        if self.token_id("<|audio_code_0|>") != AUDIO_CODE_BASE:
            raise ValueError("tokenizer.json has no <|audio_code_0|> at id 151669: not a 5 Hz LM planner tokenizer")
        self._decode_one = lru_cache(maxsize=None)(self._decode_uncached)

    @classmethod
    def from_dir(cls, directory: Path) -> "PlannerTokenizer":
        config = json.loads((directory / "tokenizer_config.json").read_text())
        return cls(Tokenizer.from_file(str(directory / "tokenizer.json")), config["eos_token"], config["pad_token"])

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        tid = self._tok.token_to_id(token)
        if tid is None:
            raise ValueError(f"token {token!r} is not in the planner vocabulary")
        return tid

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def token_text(self, token_id: int) -> str:
        """`decode([token_id])`, cached: the FSM asks for it at every step."""
        return self._decode_one(token_id)

    def _decode_uncached(self, token_id: int) -> str:
        return self._tok.decode([token_id], skip_special_tokens=False)
