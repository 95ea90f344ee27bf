"""When sharing one DiT batch between requests wins, per device (issue 9, the CPU finding).

A shared batch is padded to its longest item and masked, so it computes `n · max(lengths)`
frames instead of `sum(lengths)`. It pays off only where a bigger batch runs each token faster:
on a GPU a 75 s item (2 × 938 tokens with CFG) leaves the tensor cores partly idle, so up to
some padding the batch wins; on a CPU the matmuls of one item already keep the cores busy --
batch 4 costs 4× batch 1, 0.98× per item (bench/RESULTS.md) -- so every padded frame is pure loss.
That is the 0.84-0.88× of `bench/generation.py --requests 4` (durations 10 % apart: 15 %
padding), not the masks or the VAE. The job layer's picker (`jobs.batching.pick_batch`) lets a
task join a batch only while `padding_waste` stays within the device's `max_padding_waste`.
"""

from __future__ import annotations

import torch

# The most padding (extra frames / real frames) a shared batch may carry, per device type.
# CPU: measured (no per-token gain from batching, so none). CUDA: an estimate until
# bench/gpu.sh measures batch 4 against batch 1 on a lent GPU.
MAX_PADDING_WASTE = {"cpu": 0.0, "cuda": 0.25}


def max_padding_waste(device: torch.device | str) -> float:
    """The padding a shared batch may carry on `device` (`MAX_PADDING_WASTE`, by device type)."""
    return MAX_PADDING_WASTE.get(torch.device(device).type, 0.0)


def padding_waste(lengths: list[float]) -> float:
    """Frames computed for padding per real frame when `lengths` share one batch."""
    return (len(lengths) * max(lengths) - sum(lengths)) / sum(lengths)
