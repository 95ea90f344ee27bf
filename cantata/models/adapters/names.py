"""Which decoder modules an adapter may touch, under the names the adapter files use.

Adapter files name modules the official way (`layers.0.self_attn.q_proj`, LoKr's flattened
`layers_0_self_attn_q_proj`); our transformer holds diffusers' modules (`layers.0.self_attn.to_q`).
The translation is the checkpoint loader's own key map (`acestep.official_key`), applied to each
module's weight, so adapters and checkpoints can never disagree about a name.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..acestep import official_key
from .errors import AdapterError

_DECODER = "decoder."
# What LyCORIS wraps by class (lora.md §1); PEFT LoRA targets are Linear only. `proj_out` is a
# ConvTranspose1d and is never adapted.
ADAPTABLE = (nn.Linear, nn.Conv1d)


@dataclass(frozen=True)
class Target:
    """One adaptable module: our path in the transformer, the official path in the decoder."""

    path: str
    official: str
    module: nn.Module

    @property
    def is_linear(self) -> bool:
        return isinstance(self.module, nn.Linear)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return tuple(self.module.weight.shape)


class DecoderTargets:
    """Every adaptable module of a transformer, found by official, flattened or diffusers name."""

    def __init__(self, transformer: nn.Module):
        self.by_path: dict[str, Target] = {}
        self.by_official: dict[str, Target] = {}
        self.by_flat: dict[str, Target] = {}
        for path, module in transformer.named_modules():
            if not isinstance(module, ADAPTABLE):  # subclasses too: the INT8 DiT's `Int8Linear`
                continue
            official = official_key("transformer", f"{path}.weight")
            official = official.removeprefix(_DECODER).removesuffix(".weight")
            target = Target(path, official, module)
            self.by_path[path] = target
            self.by_official[official] = target
            flat = flatten(official)
            if flat in self.by_flat:  # would make LoKr / kohya names ambiguous
                raise AdapterError(f"decoder modules {self.by_flat[flat].official} and {official} flatten to {flat}")
            self.by_flat[flat] = target


def flatten(official: str) -> str:
    """LyCORIS' and kohya's module naming: every "." replaced by "_"."""
    return official.replace(".", "_")
