"""PEFT's LoRA configuration rules: which modules are targeted and with which scale.

Only what changes the numbers is read (lora.md §2.1); every other field of
`adapter_config.json` (PEFT writes ~40, varying by version) is accepted and ignored. Options the
official trainers never use and that need more than `alpha / r · B A` (DoRA, trained biases,
saved full modules, layer replication) are refused rather than silently applied wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import AdapterError

# field -> value that means "not in use"
_UNSUPPORTED = {"use_dora": False, "lora_bias": False, "modules_to_save": None, "layer_replication": None,
                "target_parameters": None}


def _pattern_value(patterns: dict, name: str, default):
    """PEFT's `rank_pattern`/`alpha_pattern`: a key matches a module name exactly or as a
    dotted suffix (a regex in the key is honoured), first match wins."""
    for pattern, value in (patterns or {}).items():
        if pattern == name or re.fullmatch(rf"(?:.*\.)?(?:{pattern})", name):
            return value
    return default


def _matches(spec, name: str) -> bool:
    """PEFT's module selection: a string is a regex over the full name, a list holds names
    matched exactly or as a dotted suffix."""
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return any(name == t or name.endswith("." + t) for t in spec)


@dataclass(frozen=True)
class PeftRules:
    """The number-changing fields of one PEFT LoRA config (`adapter_config.json`, or the
    `transformer.*` part of a diffusers file's `lora_adapter_metadata`)."""

    config: dict
    where: str

    @classmethod
    def from_config(cls, config: dict, where: str) -> "PeftRules":
        peft_type = config.get("peft_type")
        if peft_type is not None and str(peft_type).upper() != "LORA":
            raise AdapterError(f"{where}: peft_type {peft_type!r} is not supported (only LORA)")
        for key in ("r", "lora_alpha"):
            value = config.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise AdapterError(f"{where}: {key} must be a positive number, got {value!r}")
        for key, off in _UNSUPPORTED.items():
            if config.get(key, off) not in (off, [], {}):
                raise AdapterError(f"{where}: {key}={config[key]!r} is not supported")
        if config.get("bias", "none") != "none":
            raise AdapterError(f"{where}: bias={config['bias']!r} is not supported (only 'none')")
        return cls(config, where)

    def rank(self, name: str) -> int:
        return int(_pattern_value(self.config.get("rank_pattern"), name, self.config["r"]))

    def scale(self, name: str) -> float:
        """`lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA, per module."""
        r = self.rank(name)
        alpha = float(_pattern_value(self.config.get("alpha_pattern"), name, self.config["lora_alpha"]))
        return alpha / math.sqrt(r) if self.config.get("use_rslora") else alpha / r

    def targets(self, name: str, is_linear: bool) -> bool:
        """Whether PEFT would have given this module a LoRA layer (keys for any other module
        would be dropped by PEFT: here they are an error)."""
        spec = self.config.get("target_modules")
        if spec == "all-linear":
            chosen = is_linear
        else:
            chosen = spec is None or _matches(spec, name)
        exclude = self.config.get("exclude_modules")
        if chosen and exclude:
            chosen = not _matches(exclude, name)
        layers = self.config.get("layers_to_transform")
        if chosen and layers is not None:
            wanted = {layers} if isinstance(layers, int) else set(layers)
            found = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
            chosen = found is not None and int(found.group(1)) in wanted
        return chosen
