"""Installing `SpeedOptions` on a loaded DiT, and reading them back in the forward."""

from __future__ import annotations

from torch import nn

from .attention import install_attention
from .compile import compile_blocks
from .fusion import FUSED_NAMES, fuse_projections, unfuse_projections
from .options import SpeedOptions
from .quant import quantize_fp8, quantize_int8

_ATTRIBUTE = "cantata_speed"
_OFF = SpeedOptions()


def speed_options(transformer: nn.Module) -> SpeedOptions:
    """The options installed on `transformer` (all off when none were)."""
    return getattr(transformer, _ATTRIBUTE, _OFF)


def apply_speed(transformer: nn.Module, options: SpeedOptions) -> None:
    """Install `options` on a freshly loaded (or eager, all-off) DiT transformer, in place.

    Attention kind, fused projections and bucketing can be switched back and forth; quantization
    and compile are one-way: build the DiT again to undo them.
    Fused projections only act with the "sdpa"/"flex" processor (diffusers' runs the separate
    modules, which view the same weights). Order: INT8 before fusing (per-row
    scales make the two commute; an already fused DiT is fused again from its quantized parts),
    FP8 after (torchao tensors do not concatenate), compile last.
    """
    current = speed_options(transformer)
    if current.compile and not options.compile:
        raise ValueError("compile is already on for this DiT and cannot be turned off in place")
    if current.quantization not in ("none", options.quantization):
        raise ValueError(f"the DiT is already quantized ({current.quantization}); load it again for {options.quantization}")
    if options.quantization == "int8" and current.quantization == "none":
        quantize_int8(transformer, skip=FUSED_NAMES)  # the parts; fusing again rebuilds the rest
        if current.fused_projections:
            fuse_projections(transformer)
    if options.fused_projections and not current.fused_projections:
        fuse_projections(transformer)
    elif current.fused_projections and not options.fused_projections:
        unfuse_projections(transformer)
    if options.quantization == "fp8" and current.quantization == "none":
        quantize_fp8(transformer)
    if options.attention != current.attention:
        install_attention(transformer, options.attention)
    if options.compile and not current.compile:
        compile_blocks(transformer, options)
    setattr(transformer, _ATTRIBUTE, options)
