"""The ACE-Step DiT checkpoint as diffusers modules.

An official DiT `model.safetensors` holds four networks under four prefixes (model.md §3.2):
`decoder.*` (the DiT), `encoder.*` + `null_condition_emb` (condition encoder), `tokenizer.*`
(audio tokenizer + FSQ) and `detokenizer.*`. We build diffusers' implementations of each from
`config.json` on the meta device, rename the official keys onto them and load with a strict
check, casting tensor by tensor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
from diffusers.pipelines.ace_step.modeling_ace_step import (
    AceStepAudioTokenDetokenizer,
    AceStepAudioTokenizer,
    AceStepConditionEncoder,
)
from torch import nn

from .checkpoint import CheckpointError, iter_tensors, load_silence_latent, weight_files
from .config import DitConfig

# Official prefix -> attribute of `AceStepDiT` that holds the module.
_PREFIXES = {"decoder.": "transformer", "encoder.": "condition_encoder",
             "tokenizer.": "audio_tokenizer", "detokenizer.": "detokenizer"}
MODULE_NAMES = tuple(_PREFIXES.values())

# Official attention names <-> diffusers' `AceStepAttention` names; `proj_in`/`proj_out` are
# `Sequential(Lambda, Conv, Lambda)` officially, diffusers holds the conv itself.
_ATTN_NAMES = [("q_proj", "to_q"), ("k_proj", "to_k"), ("v_proj", "to_v"), ("o_proj", "to_out.0"),
               ("q_norm", "norm_q"), ("k_norm", "norm_k")]
_DIT_NAMES = [("proj_in.1", "proj_in_conv"), ("proj_out.1", "proj_out_conv")]


def _renames(pairs, attention: bool, backwards: bool):
    out = []
    for official, ours in pairs:
        src, dst = (ours, official) if backwards else (official, ours)
        if attention:
            out.append((re.compile(rf"(self_attn|cross_attn)\.{re.escape(src)}\."), rf"\1.{dst}."))
        else:
            out.append((re.compile(rf"^{re.escape(src)}\."), f"{dst}."))
    return out


_ATTN_RENAMES, _ATTN_BACK = _renames(_ATTN_NAMES, True, False), _renames(_ATTN_NAMES, True, True)
_DIT_RENAMES, _DIT_BACK = _renames(_DIT_NAMES, False, False), _renames(_DIT_NAMES, False, True)


def map_key(official: str) -> tuple[str, str]:
    """Official state-dict key -> (module attribute, key inside that module)."""
    if official == "null_condition_emb":
        return "condition_encoder", "null_condition_emb"
    for prefix, attr in _PREFIXES.items():
        if official.startswith(prefix):
            key = official[len(prefix):]
            if attr == "transformer":
                for pattern, repl in _DIT_RENAMES:
                    key = pattern.sub(repl, key)
            for pattern, repl in _ATTN_RENAMES:
                key = pattern.sub(repl, key)
            return attr, key
    raise CheckpointError(f"unexpected key {official!r}: not under decoder./encoder./tokenizer./detokenizer.")


_OFFICIAL_PREFIX = {attr: prefix for prefix, attr in _PREFIXES.items()}


def official_key(attr: str, key: str) -> str:
    """Inverse of `map_key`: (AceStepDiT attribute, diffusers key) -> official key.

    Checked against `map_key` on every call, so the writer can never produce a file the
    loader reads differently.
    """
    official = key
    if (attr, key) != ("condition_encoder", "null_condition_emb"):
        for pattern, repl in _ATTN_BACK + (_DIT_BACK if attr == "transformer" else []):
            official = pattern.sub(repl, official)
        official = _OFFICIAL_PREFIX[attr] + official
    if map_key(official) != (attr, key):
        raise AssertionError(f"{attr}.{key} -> {official!r} does not map back: {map_key(official)}")
    return official


def _prepend_cls_token(timbre_encoder: nn.Module) -> None:
    """XL fix (model.md §1.3, parity pitfall 2) -- the one place Cantata corrects diffusers.

    The official XL timbre encoder puts its learned `special_token` in front of the embedded
    reference frames, runs the layers over 751 positions and returns position 0 (the CLS
    output). diffusers' encoder (as the 2B one) reads position 0 without prepending. A forward
    hook on `embed_tokens` inserts the token, so the rest of diffusers' forward (RoPE, masks,
    position-0 pooling) runs unchanged on the longer sequence.
    """

    def hook(_module, _inputs, embedded):
        cls = timbre_encoder.special_token.to(embedded.dtype).expand(embedded.shape[0], -1, -1)
        return torch.cat([cls, embedded], dim=1)

    timbre_encoder.embed_tokens.register_forward_hook(hook)


@dataclass
class AceStepDiT:
    """The networks of one DiT checkpoint plus what the pipeline reads next to them."""

    config: DitConfig
    transformer: AceStepTransformer1DModel
    condition_encoder: AceStepConditionEncoder
    audio_tokenizer: AceStepAudioTokenizer
    detokenizer: AceStepAudioTokenDetokenizer
    silence_latent: torch.Tensor  # [1, frames, 64], model dtype, on the model device

    @property
    def null_condition_emb(self) -> torch.Tensor:
        return self.condition_encoder.null_condition_emb

    # Read from the silence latent, which never moves: the memory tiers may park the DiT's
    # blocks on the CPU (and INT8 makes its first weights integers).
    @property
    def dtype(self) -> torch.dtype:
        return self.silence_latent.dtype

    @property
    def device(self) -> torch.device:
        return self.silence_latent.device

    @classmethod
    def build_empty(cls, config: DitConfig) -> dict[str, nn.Module]:
        """The four modules with parameters on the meta device (no memory allocated)."""
        with init_empty_weights():
            modules = {
                "transformer": AceStepTransformer1DModel(**config.transformer_kwargs()),
                "condition_encoder": AceStepConditionEncoder(**config.condition_encoder_kwargs()),
                "audio_tokenizer": AceStepAudioTokenizer(**config.tokenizer_kwargs()),
                "detokenizer": AceStepAudioTokenDetokenizer(**config.detokenizer_kwargs()),
            }
        if config.is_xl:
            _prepend_cls_token(modules["condition_encoder"].timbre_encoder)
        return modules

    @classmethod
    def from_dir(cls, dit_dir: str | Path, device: torch.device, dtype: torch.dtype) -> "AceStepDiT":
        dit_dir = Path(dit_dir)
        config = DitConfig.from_file(dit_dir / "config.json")
        modules = cls.build_empty(config)
        state: dict[str, dict[str, torch.Tensor]] = {name: {} for name in modules}
        for key, tensor in iter_tensors(weight_files(dit_dir), device, dtype):
            attr, inner = map_key(key)
            state[attr][inner] = tensor
        silence = load_silence_latent(dit_dir)
        # diffusers keeps a copy of the silence latent as a buffer of the condition encoder.
        state["condition_encoder"]["silence_latent"] = silence.to(device=device, dtype=dtype)
        for name, module in modules.items():
            _load_strict(module, state[name], name, dit_dir.name)
            module.eval().requires_grad_(False)
        return cls(config=config, silence_latent=silence.to(device=device, dtype=dtype), **modules)


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], attr: str, checkpoint: str) -> None:
    """Load with `assign=True`; any missing, unexpected or mis-shaped key is an error naming it
    as it is spelled in the checkpoint file."""
    where = f"{checkpoint}: {attr}"
    expected = set(module.state_dict().keys())
    missing = sorted(official_key(attr, k) for k in expected - state.keys())
    unexpected = sorted(official_key(attr, k) for k in state.keys() - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:20])}" + (" ..." if len(missing) > 20 else ""))
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected[:20])}" + (" ..." if len(unexpected) > 20 else ""))
        raise CheckpointError(f"{where}: checkpoint does not match the module ({'; '.join(parts)})")
    own = module.state_dict()
    for key, tensor in state.items():
        if tuple(own[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{where}: {official_key(attr, key)} has shape {tuple(tensor.shape)} in the checkpoint, module expects {tuple(own[key].shape)}"
            )
    module.load_state_dict(state, strict=True, assign=True)
    _materialize_buffers(module, state[next(iter(state))].device)


def _materialize_buffers(module: nn.Module, device: torch.device) -> None:
    """Non-persistent buffers (FSQ levels/basis/scales) were built on CPU; move them along."""
    for sub in module.modules():
        for name, buf in list(sub._buffers.items()):
            if buf is not None and buf.device != device and not buf.is_meta:
                sub._buffers[name] = buf.to(device)
