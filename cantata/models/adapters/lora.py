"""LoRA adapters: the official PEFT directory, and the single files peers write (lora.md §2.1, §8).

Strength: PEFT's `lora_alpha / r` from `adapter_config.json` (the weights file holds no alpha),
per module with `rank_pattern`/`alpha_pattern`, `/ sqrt(r)` with rsLoRA. Files without a
config use their `.alpha` tensors (`alpha / rank`, kohya and ComfyUI) or the `lora_adapter_metadata`
diffusers writes; with neither, the scale is 1, as in diffusers and ComfyUI.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from .deltas import Adapter, LowRank
from .errors import AdapterError
from .files import read_json_object, read_safetensors
from .keys import PEER, PEFT, Group, group_keys, shape_error
from .names import DecoderTargets
from .peft_config import PeftRules

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PICKLE = "adapter_model.bin"

_PEFT_SUFFIXES = {".lora_A.weight": "down", ".lora_B.weight": "up"}
PEER_SUFFIXES = {**_PEFT_SUFFIXES, ".lora_down.weight": "down", ".lora_up.weight": "up",
                 ".lora.down.weight": "down", ".lora.up.weight": "up", ".alpha": "alpha"}
_DIFFUSERS_METADATA = "lora_adapter_metadata"

Scale = Callable[[Group, int, torch.Tensor | None], float]  # (module, rank, alpha tensor) -> scale


def load_peft_dir(directory: Path, targets: DecoderTargets, name: str) -> Adapter:
    """`adapter_config.json` + `adapter_model.safetensors`, as both official trainers write."""
    where = str(directory)
    rules = PeftRules.from_config(read_json_object(directory / PEFT_CONFIG), f"{where}/{PEFT_CONFIG}")
    weights = directory / PEFT_WEIGHTS
    if not weights.is_file():
        if (directory / PEFT_PICKLE).exists():
            raise AdapterError(f"{where}: only {PEFT_WEIGHTS} is read, and it is missing; {PEFT_PICKLE} is a "
                               "pickle and is never loaded (convert it to safetensors)")
        raise AdapterError(f"{where}: {PEFT_CONFIG} found but no {PEFT_WEIGHTS}")
    tensors, _ = read_safetensors(weights)
    where = str(weights)
    groups = group_keys(tensors, targets, PEFT, _PEFT_SUFFIXES, where)
    for group in groups.values():
        if not rules.targets(group.name, group.target.is_linear):
            key = next(iter(group.keys.values()))
            raise AdapterError(f"{where}: key {key!r} is not used: {PEFT_CONFIG}'s target_modules "
                               f"({rules.config.get('target_modules')!r}) does not select {group.name}")

    def scale(group: Group, rank: int, _alpha) -> float:
        want = rules.rank(group.name)
        if rank != want:
            raise AdapterError(f"{where}: {group.keys['down']} has rank {rank}, {PEFT_CONFIG} says r={want}")
        return rules.scale(group.name)

    return Adapter(name, "lora", str(directory), _deltas(tensors, groups, scale, where))


def load_lora_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                   targets: DecoderTargets, name: str) -> Adapter:
    """A single LoRA safetensors file without `adapter_config.json` (peer forms, lora.md §8)."""
    where = str(path)
    groups = group_keys(tensors, targets, PEER, PEER_SUFFIXES, where)
    rules = _diffusers_rules(metadata, where)

    def scale(group: Group, rank: int, alpha: torch.Tensor | None) -> float:
        if alpha is not None:
            if alpha.numel() != 1:
                raise shape_error(where, group.keys["alpha"], alpha.shape, "a single number")
            return float(alpha.item()) / rank
        if rules is not None:
            return rules.scale(group.name)
        return 1.0

    return Adapter(name, "lora", where, _deltas(tensors, groups, scale, where))


def _diffusers_rules(metadata: dict[str, str], where: str) -> PeftRules | None:
    """diffusers stores the LoraConfig as JSON under `lora_adapter_metadata`, keys prefixed
    with the component (`transformer.r`, `transformer.lora_alpha`, ...)."""
    raw = metadata.get(_DIFFUSERS_METADATA)
    if not raw:
        return None
    try:
        packed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{where}: metadata {_DIFFUSERS_METADATA} is not JSON ({exc})") from None
    config = {k.removeprefix("transformer."): v for k, v in packed.items() if k.startswith("transformer.")}
    return PeftRules.from_config(config, f"{where} ({_DIFFUSERS_METADATA})") if config else None


def _deltas(tensors: dict[str, torch.Tensor], groups: dict[str, Group], scale: Scale, where: str) -> dict[str, LowRank]:
    out: dict[str, LowRank] = {}
    for path, group in groups.items():
        for role in ("down", "up"):
            if role not in group.keys:
                present = next(iter(group.keys.values()))
                raise AdapterError(f"{where}: {present} has no matching lora_{'A' if role == 'down' else 'B'} "
                                   f"(or lora_{role}) tensor for the same module")
        if not group.target.is_linear:
            raise AdapterError(f"{where}: {group.keys['down']}: LoRA on a convolution is not supported")
        down, up = tensors[group.keys["down"]], tensors[group.keys["up"]]
        out_features, in_features = group.target.weight_shape
        if down.ndim != 2 or down.shape[1] != in_features:
            raise shape_error(where, group.keys["down"], down.shape, f"[rank, {in_features}]")
        if up.ndim != 2 or up.shape != (out_features, down.shape[0]):
            raise shape_error(where, group.keys["up"], up.shape, f"[{out_features}, {down.shape[0]}]")
        out[path] = LowRank(down, up, scale(group, down.shape[0], tensors.get(group.keys.get("alpha", ""))))
    return out
