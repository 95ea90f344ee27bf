"""LyCORIS LoKr files (lora.md §2.2, §3): `ΔW = m · c · kron(W1, W2)`.

`c` follows LyCORIS exactly: `linear_alpha / linear_dim` from the `lokr_config` metadata
(÷ √dim with `rs_lora`), except when a module stores both factors full, where LyCORIS replaces
alpha by the dim and `c` is 1 (√dim with `rs_lora`) -- with the official defaults that is every
module of the real models. Files without a readable `lokr_config` (other LyCORIS trainers) use
ComfyUI's rule, the module's `alpha` tensor over the rank of its decomposed factor, 1 when both
are full; for every file the official loader accepts the two rules agree (the trainer writes
`alpha` = `linear_alpha`, or the dim when both are full).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .deltas import Adapter, ConvKernel, Kronecker
from .errors import AdapterError
from .keys import PEER, Group, group_keys, shape_error
from .names import DecoderTargets

LOKR_FILE = "lokr_weights.safetensors"
LOKR_CONFIG = "lokr_config"

_FACTORS = {".lokr_w1": "w1", ".lokr_w1_a": "w1_a", ".lokr_w1_b": "w1_b",
            ".lokr_w2": "w2", ".lokr_w2_a": "w2_a", ".lokr_w2_b": "w2_b"}
# Written only with options the official trainers leave off; refused by name, never ignored.
_UNSUPPORTED = {".lokr_t2": "Tucker-decomposed LoKr (use_tucker)", ".dora_scale": "DoRA (weight_decompose)",
                ".scalar": "use_scalar"}
_SUFFIXES = {**_FACTORS, ".alpha": "alpha", **{s: s for s in _UNSUPPORTED}}


def is_lokr(path: Path, metadata: dict[str, str]) -> bool:
    """The official loader's test (lora.md §2): the file name, or a non-empty `lokr_config`."""
    return path.name == LOKR_FILE or bool(metadata.get(LOKR_CONFIG))


def has_lokr_keys(keys) -> bool:
    return any(k.endswith(s) for k in keys for s in _FACTORS)


def load_lokr_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                   targets: DecoderTargets, name: str) -> Adapter:
    where = str(path)
    config = _config(metadata)
    groups = group_keys(tensors, targets, PEER, _SUFFIXES, where)
    deltas = {}
    for module, group in groups.items():
        for suffix, what in _UNSUPPORTED.items():
            if suffix in group.keys:
                raise AdapterError(f"{where}: {group.keys[suffix]}: {what} is not supported")
        w1, w2, full, rank, rank_key = _factors(group, tensors, where)
        c = _scale(config, full, rank, rank_key, group, tensors, where)
        deltas[module] = _delta(group, w1, w2, c, where)
    return Adapter(name, "lokr", where, deltas)


def _config(metadata: dict[str, str]) -> dict | None:
    try:
        config = json.loads(metadata.get(LOKR_CONFIG) or "null")
    except json.JSONDecodeError:
        return None
    return config if isinstance(config, dict) else None


def _factor(group: Group, tensors, full: str, where: str):
    """One Kronecker factor: stored full, or as `_a @ _b`. Returns (factor, rank, key of `_b`)."""
    keys = group.keys
    a, b = f"{full}_a", f"{full}_b"
    if full in keys and (a in keys or b in keys):
        raise AdapterError(f"{where}: {keys[full]} is stored both full and decomposed")
    if full in keys:
        return tensors[keys[full]], None, None
    if a in keys and b in keys:
        wa, wb = tensors[keys[a]], tensors[keys[b]]
        if wa.ndim != 2 or wb.shape[0] != wa.shape[1]:
            raise shape_error(where, keys[b], wb.shape, f"[{wa.shape[-1]}, ...] to follow {keys[a]} {tuple(wa.shape)}")
        return wa @ wb.reshape(wb.shape[0], -1), wb.shape[0], keys[b]
    present = next((k for role, k in sorted(keys.items()) if role != "alpha"), keys.get("alpha"))
    raise AdapterError(f"{where}: {present}: the module has no complete lokr_{full} factor "
                       f"(lokr_{full}, or lokr_{a} and lokr_{b})")


def _factors(group: Group, tensors, where: str):
    w1, r1, k1 = _factor(group, tensors, "w1", where)
    w2, r2, k2 = _factor(group, tensors, "w2", where)
    if w1.ndim != 2:
        raise shape_error(where, group.keys.get("w1", group.keys.get("w1_a")), w1.shape, "a matrix")
    full = r1 is None and r2 is None
    return w1, w2, full, r1 if r1 is not None else r2, k1 or k2


def _scale(config: dict | None, full: bool, rank: int | None, rank_key: str | None, group: Group,
           tensors, where: str) -> float:
    if config is not None:
        dim = float(config.get("linear_dim", 64))
        alpha = dim if full else float(config.get("linear_alpha", 128))
        if not full and rank != dim:
            raise AdapterError(f"{where}: {rank_key} has rank {rank}, {LOKR_CONFIG} says linear_dim={dim:g}")
        return alpha / (math.sqrt(dim) if config.get("rs_lora") else dim)
    if full or "alpha" not in group.keys:
        return 1.0
    alpha = tensors[group.keys["alpha"]]
    if alpha.numel() != 1:
        raise shape_error(where, group.keys["alpha"], alpha.shape, "a single number")
    return float(alpha.item()) / rank


def _delta(group: Group, w1: torch.Tensor, w2: torch.Tensor, c: float, where: str):
    shape = group.target.weight_shape
    key = next(k for role, k in sorted(group.keys.items()) if role != "alpha")
    if group.target.is_linear:
        if w2.ndim != 2 or (w1.shape[0] * w2.shape[0], w1.shape[1] * w2.shape[1]) != shape:
            raise AdapterError(f"{where}: {key}: kron of factors {tuple(w1.shape)} and {tuple(w2.shape)} "
                               f"does not give the module's weight {shape} (an adapter for another base model?)")
        return Kronecker(w1, w2, c)
    # Conv1d: W2 is [n_out, n_in, k] (full) or [n_out, n_in·k] (decomposed); LyCORIS lifts W1 to
    # W2's rank, then reshapes kron(W1, W2) to the kernel.
    lifted = w1.reshape(*w1.shape, *[1] * (w2.ndim - 2))
    kernel = torch.kron(lifted, w2)
    if kernel.numel() != math.prod(shape) or kernel.shape[0] != shape[0]:
        raise AdapterError(f"{where}: {key}: kron of factors {tuple(w1.shape)} and {tuple(w2.shape)} "
                           f"does not give the kernel {shape} (an adapter for another base model?)")
    return ConvKernel(kernel.reshape(shape), c)
