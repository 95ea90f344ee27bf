"""Installing `SpeedOptions` on a loaded DiT, and reading them back in the forward."""

from __future__ import annotations

from torch import nn

from .attention import install_attention
from .compile import compile_blocks
from .fusion import fuse_projections
from .options import SpeedOptions
from .quant import quantize_fp8, quantize_int8

_ATTRIBUTE = "cantata_speed"
_OFF = SpeedOptions()


def speed_options(transformer: nn.Module) -> SpeedOptions:
    """The options installed on `transformer` (all off when none were)."""
    return getattr(transformer, _ATTRIBUTE, _OFF)


def apply_speed(transformer: nn.Module, options: SpeedOptions) -> None:
    """Install `options` on a freshly loaded (or eager, all-off) DiT transformer, in place.

    The attention kind and bucketing can be switched back and forth; weight transforms and compile
    are one-way (quantized or fused weights are not undone): build the DiT again to undo them.
    Fused projections only act with the "sdpa"/"flex" processor (diffusers' runs the separate
    modules, which view the same weights). Order: INT8 before fusing (per-row
    scales make the two commute), FP8 after (torchao tensors do not concatenate), compile last.
    """
    current = speed_options(transformer)
    for switch in ("fused_projections", "compile"):
        if getattr(current, switch) and not getattr(options, switch):
            raise ValueError(f"{switch} is already on for this DiT and cannot be turned off in place")
    if current.quantization not in ("none", options.quantization):
        raise ValueError(f"the DiT is already quantized ({current.quantization}); load it again for {options.quantization}")
    if options.quantization == "int8" and current.quantization == "none":
        quantize_int8(transformer)
    if options.fused_projections:
        fuse_projections(transformer)
    if options.quantization == "fp8" and current.quantization == "none":
        quantize_fp8(transformer)
    if options.attention != current.attention:
        install_attention(transformer, options.attention)
    if options.compile and not current.compile:
        compile_blocks(transformer, options)
    setattr(transformer, _ATTRIBUTE, options)
