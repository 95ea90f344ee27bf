"""Adapters on an INT8 DiT (the `low` memory tier): they load, and they act as on the
full-precision DiT, up to INT8's own error -- on the LoRA kit's XL SFT checkpoint and adapters."""

from __future__ import annotations

import torch

from cantata.models.adapters import load_adapter, use_adapters
from cantata.models.speed.memory import apply_tier
from cantata.pipeline import CantataPipeline
from parity import LORA_KIT

ADAPTER = LORA_KIT.folder / "adapters" / "xl-sft_lora_a"


def _velocity(transformer, adapters=()) -> torch.Tensor:
    source = LORA_KIT.manifest["xl-sft/dit_base"].get("inputs_case", "xl-sft/dit_base")
    t = lambda name: torch.from_numpy(LORA_KIT.inputs[f"{source}/{name}"])  # noqa: E731
    with torch.no_grad(), use_adapters(transformer, adapters):
        return transformer(t("hidden_states"), t("timestep"), t("timestep"), t("encoder_hidden_states"),
                           t("context_latents")).sample


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_an_adapter_acts_on_the_int8_dit_as_on_the_full_precision_one(pipelines, parity_root):
    full = pipelines("xl-sft").dit.transformer
    int8 = CantataPipeline.from_pretrained(parity_root, "xl-sft", device="cpu", dtype="fp32", download=False)
    apply_tier(int8, "low")
    quantized = int8.dit.transformer
    assert quantized.layers[0].mlp.down_proj.weight.dtype == torch.int8
    on_full = [(load_adapter(ADAPTER, full), 1.0)]
    on_int8 = [(load_adapter(ADAPTER, quantized), 1.0)]  # loads: every key finds its INT8 target
    base_full, base_int8 = _velocity(full), _velocity(quantized)
    with_full, with_int8 = _velocity(full, on_full), _velocity(quantized, on_int8)
    effect_full, effect_int8 = with_full - base_full, with_int8 - base_int8
    assert effect_full.norm() > 0.05 * base_full.norm()  # the adapter matters
    assert _rel(effect_int8, effect_full) < 0.05  # and acts the same on INT8 weights
