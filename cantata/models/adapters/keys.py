"""Splitting adapter keys into (module, tensor role) under a strict key map.

A key is `<module prefix><module name><tensor suffix>`. The prefix says how the module is named
(official dotted path, LyCORIS/kohya flattened path, or our diffusers path); the suffix says
which tensor it is. Any key that fits no known suffix, or whose module is not an adaptable
module of the decoder, is an error naming the key as spelled in the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .errors import AdapterError
from .names import DecoderTargets, Target

Resolver = Callable[[DecoderTargets, str], Target | None]

# Module prefix -> how the rest of the name is looked up (lora.md §2, §8).
PEFT = {"base_model.model.": lambda t, n: t.by_official.get(n)}
PEER = {
    "base_model.model.": lambda t, n: t.by_official.get(n),  # official PEFT keys, file alone
    "diffusion_model.decoder.": lambda t, n: t.by_official.get(n),  # ComfyUI
    "transformer.": lambda t, n: t.by_path.get(n),  # diffusers-native
    "lora_unet_decoder_": lambda t, n: t.by_flat.get(n),  # kohya
    "lycoris_": lambda t, n: t.by_flat.get(n),  # LyCORIS
}


@dataclass
class Group:
    """The tensors of one module: role -> key as spelled in the file."""

    target: Target
    name: str  # the module name as the file spells it (PEFT patterns match on it)
    keys: dict[str, str] = field(default_factory=dict)


def group_keys(keys: Iterable[str], targets: DecoderTargets, prefixes: dict[str, Resolver],
               suffixes: dict[str, str], where: str) -> dict[str, Group]:
    """Group keys by module (our module path -> Group). `suffixes`: tensor suffix -> role."""
    by_length = sorted(suffixes, key=len, reverse=True)
    groups: dict[str, Group] = {}
    for key in sorted(keys):
        suffix = next((s for s in by_length if key.endswith(s)), None)
        if suffix is None:
            raise AdapterError(f"{where}: unknown key {key!r} (expected one of the tensor suffixes "
                               f"{', '.join(sorted(suffixes))})")
        module = key[: -len(suffix)]
        prefix = next((p for p in prefixes if module.startswith(p)), None)
        target = prefixes[prefix](targets, module[len(prefix):]) if prefix else None
        if target is None:
            raise AdapterError(f"{where}: key {key!r} names no adaptable module of this model's DiT decoder")
        group = groups.setdefault(target.path, Group(target, module[len(prefix):]))
        role = suffixes[suffix]
        if role in group.keys:
            raise AdapterError(f"{where}: keys {group.keys[role]!r} and {key!r} are the same tensor of one module")
        group.keys[role] = key
    return groups


def shape_error(where: str, key: str, shape, expected: str) -> AdapterError:
    return AdapterError(f"{where}: {key} has shape {tuple(shape)}, expected {expected}"
                        " (an adapter for another base model?)")
