"""Regional `torch.compile`: each transformer block compiled on its own.

The 32 (XL) blocks share one code object, so one compilation serves them all; the glue around
them (embeddings, masks, patch convs) stays eager. Shapes come from the length buckets
(`buckets.py`, with `SpeedOptions.bucketing`), so a server meets a handful of them: the first
change of shape recompiles once with dynamic sizes (PyTorch's automatic dynamic shapes), after
that no step recompiles. `cuda_graphs` uses mode "reduce-overhead" (CUDA graph trees: one
recorded graph per shape, replayed at every step).
"""

from __future__ import annotations

from torch import nn

from .options import SpeedOptions


def compile_blocks(transformer: nn.Module, options: SpeedOptions) -> None:
    mode = "reduce-overhead" if options.cuda_graphs else None
    for layer in transformer.layers:
        layer.compile(mode=mode, fullgraph=False)
