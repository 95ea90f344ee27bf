"""The speed switches of the DiT and the one function that picks their defaults per device."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

# "dense": diffusers' path as it always was (additive float masks, a dense band for the sliding
#          layers); bit for bit the parity-tested forward.
# "sdpa":  `scaled_dot_product_attention` with no mask at all where nothing is padded (full layers,
#          cross attention), boolean band / length masks elsewhere -- the flash / efficient kernels.
# "flex":  as "sdpa", but the sliding-window layers go through FlexAttention with a band BlockMask
#          (block-sparse: only the ~2·128-token band is computed); needs `torch.compile` to be fast.
ATTENTION_KINDS = ("dense", "sdpa", "flex")
# "int8": weight-only, per output row, our own `Int8Linear` (half the bf16 weight memory).
# "fp8":  torchao float8 dynamic activation + weight, per row (H100/H200 class, sm89+).
QUANTIZATIONS = ("none", "int8", "fp8")


@dataclass(frozen=True)
class SpeedOptions:
    """Which speed switches the DiT runs with. All off = the parity-tested eager diffusers forward."""

    attention: str = "dense"
    fused_projections: bool = False  # one matmul for q/k/v (k/v in cross attention) and gate/up
    compile: bool = False  # regional torch.compile of each transformer block
    cuda_graphs: bool = False  # compile mode "reduce-overhead" (CUDA only, needs compile)
    bucketing: bool = False  # pad frames / condition tokens to `buckets.py` sizes, masked exactly
    quantization: str = "none"

    def __post_init__(self):
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_KINDS)}, got {self.attention!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {self.quantization!r}")
        if self.cuda_graphs and not self.compile:
            raise ValueError("cuda_graphs needs compile")

    def with_(self, **changes) -> "SpeedOptions":
        return replace(self, **changes)

    def describe(self) -> str:
        """One key=value line for logs and `/ready`."""
        return (f"attention={self.attention} fused={int(self.fused_projections)} compile={int(self.compile)} "
                f"cuda_graphs={int(self.cuda_graphs)} bucketing={int(self.bucketing)} quantization={self.quantization}")


def default_options(device: torch.device | str) -> SpeedOptions:
    """The switches that are on by default: only those measured to win on that kind of device.

    CPU: none. bench/RESULTS.md ("DiT speed switches"; mid XL SFT, 30 s, CFG batch, CPU seconds
    per forward on one thread, two runs): dense 1.95/1.70, SDPA 1.84/1.87, SDPA + fused
    1.89/1.64, eager FlexAttention 2.20/1.97 (no fused CPU kernel without compile), INT8 1.95 --
    all within the ±15 % noise of the shared box; compile costs minutes of warm-up. So the CPU
    keeps the parity-tested dense forward.

    CUDA: SDPA (flash kernels for the unpadded layers, no O(S²) additive mask) and fused
    projections, which cannot lose (the same math in fewer launches and bigger GEMMs).
    FlexAttention, compile, CUDA graphs and bucketing stay off until `bench/gpu.sh` has measured
    them on a lent GPU (none was lent while they were written): turn them on here after reading
    its table.
    """
    if torch.device(device).type == "cuda":
        return SpeedOptions(attention="sdpa", fused_projections=True)
    return SpeedOptions()
