"""The one cancel check of a generation: the caller's flag, polled at every unit of long work.

A generation polls `cancelled()` between planner decode steps, between sampler steps and before
every VAE window (encode and decode), so a client's cancel or a server shutdown's grace period stops it at the next of
those points, wherever it is.
"""

from __future__ import annotations

from collections.abc import Callable

from .request import GenerationCancelled

CancelCheck = Callable[[], bool]


def stop_if_cancelled(cancelled: CancelCheck | None, before: str) -> None:
    """Raise `GenerationCancelled` when the caller's check says so; `before` names the next unit."""
    if cancelled is not None and cancelled():
        raise GenerationCancelled(f"cancelled before {before}")
