"""Weight quantization of the DiT blocks: INT8 weight-only (ours) and FP8 (torchao).

Only the linear layers inside the transformer blocks are quantized (attention projections and
the MLP: 98 % of the XL DiT's weights), as the official loader does with torchao; embeddings,
the patch convs, the time embeddings and every norm stay in the model dtype. Both change the song
a seed gives (the benchmark prints the rel L2 of the final latents against the unquantized run).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# torchao is not a dependency of the CPU build; FP8 asks for it by name.
TORCHAO_PIN = "torchao==0.18.0"


class Int8Linear(nn.Linear):
    """`y = (x · W_q^T) · s + b`: int8 weights with one scale per output row (symmetric, absmax).

    A subclass of `nn.Linear` so that forward hooks (adapters) and `isinstance` checks keep
    working. The int8 weight is cast to the activation dtype inside the matmul's operand; under
    `torch.compile` the cast fuses into the GEMM's load. Per-row scales make quantizing a
    concatenation of weights (fused projections) identical to concatenating quantized weights.
    """

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        nn.Module.__init__(self)
        self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.register_buffer("weight_scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    @classmethod
    def quantize(cls, linear: nn.Linear) -> "Int8Linear":
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / 127.0
        q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(q, scale.to(linear.weight.dtype), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight.to(x.dtype)) * self.weight_scale.to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)


def _block_linears(transformer: nn.Module, skip: tuple[str, ...]):
    for layer in transformer.layers:
        for name, module in layer.named_modules():
            if type(module) is nn.Linear and name.rpartition(".")[2] not in skip:
                yield layer, name, module


def quantize_int8(transformer: nn.Module, skip: tuple[str, ...] = ()) -> None:
    """Replace every plain `nn.Linear` of the blocks (but those named in `skip`) by its `Int8Linear`."""
    for layer, name, module in list(_block_linears(transformer, skip)):
        parent_name, _, child = name.rpartition(".")
        parent = layer.get_submodule(parent_name) if parent_name else layer
        setattr(parent, child, Int8Linear.quantize(module))


def quantize_fp8(transformer: nn.Module) -> None:
    """torchao float8 dynamic activation + weight quantization, per row, of the blocks' linears."""
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_
    except ImportError as e:
        raise RuntimeError(f"quantization 'fp8' needs torchao: pip install {TORCHAO_PIN}") from e
    device = next(transformer.parameters()).device
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        raise RuntimeError("quantization 'fp8' needs a CUDA GPU with compute capability 8.9+ (Ada, Hopper)")
    for layer in transformer.layers:
        quantize_(layer, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
                  filter_fn=lambda m, _name: isinstance(m, nn.Linear))
