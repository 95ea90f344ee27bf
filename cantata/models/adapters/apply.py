"""Running the DiT with adapters: `with use_adapters(transformer, ...): transformer(...)`.

Nothing is merged into the base weights and no module is replaced: for the duration of the
`with` block, each module an adapter touches gets a forward hook that adds the adapters'
low-rank (or Kronecker) updates to the base output. The base matmul runs once for the whole
batch; each adapter's update is computed only for the rows that use it and added to those rows
(S-LoRA / Punica style), so one batch can mix items with different adapters, several summed
adapters, or none. Rows without any adapter, and all rows when every weight is 0 or the list is
empty, get exactly the base output (no hook is installed at all in the latter case).

Rows: `rows[i]` is the adapter list of item i. A forward may see the items repeated -- the
sampler runs the conditional and unconditional halves as `cat([x, x])` -- so a batch of
`k · len(rows)` rows gives row `j` the adapters of item `j % len(rows)`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .deltas import Adapter, Delta
from .errors import AdapterError

Selection = Sequence[tuple[Adapter, float]]  # (adapter, weight) pairs, summed

_active: set[int] = set()  # ids of transformers inside a `use_adapters` block
_lock = threading.Lock()


@dataclass
class _Use:
    """One adapter's delta on one module, and the items (rows) that use it with their weights."""

    delta: Delta
    items: torch.Tensor | None  # item indices; None: every row, with `weight`
    weights: torch.Tensor | float
    cache: dict = field(default_factory=dict)

    def add_to(self, out: torch.Tensor, x: torch.Tensor, module: nn.Module, n_items: int) -> torch.Tensor:
        if self.items is None:
            return out + self.delta(x, module, self.weights)
        rows, weights = self._rows(x, n_items)
        return out.index_add(0, rows, self.delta(x.index_select(0, rows), module, weights))

    def _rows(self, x: torch.Tensor, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices and per-row weights for a batch of `x.shape[0]` rows, on x's device
        (cached: the same batch layout comes back at every step)."""
        key = (x.shape[0], x.device, x.dtype, x.ndim)
        if key not in self.cache:
            batch = x.shape[0]
            if batch % n_items:
                raise AdapterError(f"a batch of {batch} rows cannot carry adapters chosen for {n_items} items")
            repeats = batch // n_items
            rows = (self.items[None, :] + n_items * torch.arange(repeats)[:, None]).flatten()
            weights = self.weights.repeat(repeats).reshape(-1, *[1] * (x.ndim - 1))
            self.cache[key] = (rows.to(x.device), weights.to(x.device, x.dtype))
        return self.cache[key]


def _plan(rows: Sequence[Selection]) -> dict[str, list[_Use]]:
    """Module path -> the adapter uses acting on it (weight-0 pairs dropped)."""
    n = len(rows)
    per_adapter: dict[int, tuple[Adapter, list[int], list[float]]] = {}
    for item, selection in enumerate(rows):
        for adapter, weight in selection:
            if weight == 0:
                continue
            entry = per_adapter.setdefault(id(adapter), (adapter, [], []))
            if item in entry[1]:
                raise AdapterError(f"adapter {adapter.name!r} is listed twice for one item")
            entry[1].append(item)
            entry[2].append(float(weight))
    plan: dict[str, list[_Use]] = {}
    for adapter, items, weights in per_adapter.values():
        everywhere = items == list(range(n)) and len(set(weights)) == 1
        for path, delta in adapter.deltas.items():
            use = (_Use(delta, None, weights[0]) if everywhere else
                   _Use(delta, torch.tensor(items), torch.tensor(weights, dtype=torch.float64)))
            plan.setdefault(path, []).append(use)
    return plan


def _hook(uses: list[_Use], n_items: int):
    def add_deltas(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        for use in uses:
            output = use.add_to(output, x, module, n_items)
        return output

    return add_deltas


@contextmanager
def use_adapters(transformer: nn.Module, adapters: Selection = (), *,
                 rows: Sequence[Selection] | None = None) -> Iterator[None]:
    """Run `transformer` with `adapters` on every row, or with `rows[i]` on the rows of item i.

    Several adapters are summed, each with its weight: `y = W x + b + Σ wᵢ ΔWᵢ x`. One block at a
    time per transformer (the hooks live on its shared modules).
    """
    if rows is not None and adapters:
        raise ValueError("pass either adapters (every row) or rows (one selection per item)")
    plan = _plan(rows if rows is not None else [adapters])
    n_items = len(rows) if rows is not None else 1
    modules = dict(transformer.named_modules())
    for path, uses in plan.items():
        module = modules.get(path)
        for use in uses:
            if module is None or tuple(module.weight.shape) != use.delta.weight_shape:
                raise AdapterError(f"adapter does not fit this model: {path} is "
                                   f"{None if module is None else tuple(module.weight.shape)}, "
                                   f"the adapter was loaded for {use.delta.weight_shape}")
    with _lock:
        if id(transformer) in _active:
            raise RuntimeError("adapters are already in use on this transformer (nested use_adapters)")
        _active.add(id(transformer))
    handles = []
    try:
        for path, uses in plan.items():
            # Items of a `rows` plan index rows; an every-row plan ignores the batch layout.
            handles.append(modules[path].register_forward_hook(_hook(uses, n_items)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        with _lock:
            _active.discard(id(transformer))
