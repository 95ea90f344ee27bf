"""Memory tiers: what stays on the GPU, so that XL SFT runs on 12, 16 and 24 GB cards.

| tier | DiT | text encoder, VAE | for |
|---|---|---|---|
| high | resident, model dtype | resident | 24 GB and up |
| balanced | resident, model dtype | on the CPU, moved in for each use | 16 GB |
| low | resident, blocks' linears INT8 | on the CPU, moved in for each use | 12 GB |
| offload | blocks on the CPU, each moved in for its forward | on the CPU, moved in for each use | last resort |

Only `low` changes the song (INT8 weights; rel L2 of the latents in bench/RESULTS.md); the
others give the same audio as `high` bit for bit (tested on CPU). The tier names live in
`models.vocabulary` (`MEMORY_TIERS`), read by the CLI (`--memory`), the config and this module.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from functools import lru_cache

import torch
from torch import nn

from ..vocabulary import MEMORY_CHOICES, MEMORY_TIERS
from .apply import apply_speed, speed_options

# Working memory of one DiT batch beside the weights (activations, masks, the VAE's decode
# window, allocator slack): XL, 4 × 240 s with CFG in bf16 stays below this.
ACTIVATION_HEADROOM = 3 * 2**30


@lru_cache(maxsize=8)
def weight_bytes(variant: str) -> dict[str, int]:
    """Bytes of the real model's parts in a 2-byte dtype (and the INT8 DiT blocks), counted on
    the meta device from the official shapes."""
    from diffusers import AutoencoderOobleck
    from transformers import Qwen3Config, Qwen3Model

    from ..acestep import AceStepDiT
    from ..config import DitConfig
    from ..tiny import dit_config, text_encoder_config, vae_config

    dit = AceStepDiT.build_empty(DitConfig(dit_config(variant, "full")))
    with torch.device("meta"):
        text = Qwen3Model(Qwen3Config(**{k: v for k, v in text_encoder_config("full").items() if k != "architectures"}))
        vae = AutoencoderOobleck(**vae_config("full"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    linears = [m for m in dit["transformer"].layers.modules() if type(m) is nn.Linear]
    block_linear = sum(m.weight.numel() for m in linears)
    dit_params = sum(count(m) for m in dit.values())
    layers = dit["transformer"].layers
    return {"dit": 2 * dit_params, "dit_block": 2 * count(layers) // len(layers),
            "dit_int8": 2 * (dit_params - block_linear) + block_linear + 4 * sum(m.out_features for m in linears),
            "text_encoder": 2 * count(text), "vae": 2 * count(vae)}


def tier_bytes(variant: str, tier: str) -> int:
    """GPU memory a tier needs for `variant`: the weights resident on the GPU plus the headroom.
    An offloaded text encoder or VAE visits alone, while no DiT activations exist: it fits in
    the headroom."""
    w = weight_bytes(variant)
    blocks = w["dit_block"] * dit_layers(variant)
    resident = {"high": w["dit"] + w["text_encoder"] + w["vae"],
                "balanced": w["dit"],
                "low": w["dit_int8"],
                "offload": w["dit"] - blocks + w["dit_block"]}[_check(tier)]
    return resident + ACTIVATION_HEADROOM


def dit_layers(variant: str) -> int:
    from ..tiny import dit_config

    return dit_config(variant, "full")["num_hidden_layers"]


def choose_tier(free_bytes: int, variant: str) -> str:
    """The highest tier that fits in `free_bytes` of free GPU memory (`offload` if none does)."""
    for tier in MEMORY_TIERS[:-1]:
        if tier_bytes(variant, tier) <= free_bytes:
            return tier
    return "offload"


def resolve_tier(choice: str, device: torch.device, variant: str) -> str:
    """The tier a model loads in: `choice` itself, or for `auto` the highest that fits in the
    device's free memory now, before the model loads (a CPU keeps everything resident: `high`)."""
    if choice != "auto":
        return _check(choice)
    if device.type != "cuda":
        return "high"
    return choose_tier(torch.cuda.mem_get_info(device)[0], variant)


def _check(tier: str) -> str:
    if tier not in MEMORY_TIERS:
        raise ValueError(f"memory tier must be one of {', '.join(MEMORY_CHOICES)}, got {tier!r}")
    return tier


def decode_beside_sampling(tier: str) -> bool:
    """Whether the server's worker decodes one batch's latents while the next batch samples.

    In `high` only: on a GPU the VAE runs on a CUDA stream of its own, its kernels filling the
    gaps between the DiT's; on a CPU its thread fills the cores the DiT's ops leave idle (mid XL
    SFT, 3 batches of 30 s, 8 steps, on 2 cores: 1.03-1.08x, `bench/RESULTS.md`). The offloading
    tiers budget for a VAE that visits alone, while no DiT activations exist (`tier_bytes`), so
    there the worker decodes between batches.
    """
    return _check(tier) == "high"


class Residency:
    """Modules kept off the execution device between uses; `using` brings them in for one.

    Thread-safe: the worker's finisher decodes with the VAE while the worker thread may encode a
    source with it, so each module counts its users and parks only when the last one leaves."""

    def __init__(self, device: torch.device, offloaded: tuple[nn.Module, ...] = (), parking: str = "cpu"):
        self.device, self.parking = device, torch.device(parking)
        self.offloaded = list(offloaded)
        self._users = [0] * len(self.offloaded)
        self._lock = threading.Lock()
        for module in self.offloaded:
            module.to(self.parking)

    @contextmanager
    def using(self, *modules: nn.Module):
        slots = [i for i, o in enumerate(self.offloaded) if any(m is o for m in modules)]
        self._enter(slots)
        try:
            yield
        finally:
            self._leave(slots)

    def _enter(self, slots: list[int]) -> None:
        with self._lock:
            for i in slots:
                if self._users[i] == 0:
                    self.offloaded[i].to(self.device)
                self._users[i] += 1

    def _leave(self, slots: list[int]) -> None:
        with self._lock:
            for i in slots:
                self._users[i] -= 1
                if self._users[i] == 0:
                    self.offloaded[i].to(self.parking)


def _stream_blocks(transformer: nn.Module, device: torch.device, parking: torch.device) -> None:
    """Sequential offload: each block lives on `parking` and visits `device` for its forward."""
    def visit(module, _args):
        module.to(device)

    def leave(module, _args, _out):
        module.to(parking)

    for layer in transformer.layers:
        layer.to(parking)
        layer.register_forward_pre_hook(visit)
        layer.register_forward_hook(leave)


def apply_tier(pipeline, tier: str, parking: str = "cpu") -> None:
    """Put a freshly loaded `CantataPipeline` in `tier` (once; load again for another tier).

    The DiT's own switches follow the tier: `low` adds INT8; `offload` turns fused projections
    and compile off (moving fused views apart would double their weights, and a compiled block
    whose weights change device recompiles).
    """
    _check(tier)
    device = pipeline.device
    transformer = pipeline.dit.transformer
    options = speed_options(transformer)
    if tier == "low":
        apply_speed(transformer, options.with_(quantization="int8"))
    if tier == "offload":
        if options.compile:
            raise ValueError("the offload tier cannot stream compiled blocks: load the DiT without compile")
        apply_speed(transformer, options.with_(fused_projections=False))
        _stream_blocks(transformer, device, torch.device(parking))
    helpers = () if tier == "high" else (pipeline.conditioner.text_encoder, pipeline.vae)
    pipeline.residency = Residency(device, helpers, parking)
    pipeline.memory_tier = tier
    pipeline.decode_beside_sampling = decode_beside_sampling(tier)
