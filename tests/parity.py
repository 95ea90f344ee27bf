"""Shared access to the parity fixtures and the kit's tolerance classes."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures" / "parity"

# Tolerance classes of the parity kit: (max rel L2, max abs error / max |ref|, min cosine).
TOLERANCES = {
    "default": (1e-5, 1e-4, 1 - 1e-9),
    "text_encoder": (1e-5, 1e-4, 1 - 1e-9),
    "sample": (1e-4, 1e-3, 1 - 1e-7),
    "waveform": (1e-4, 1e-3, 1 - 1e-7),
}

VARIANTS = {"xl-sft": "xl-sft", "2b-sft": "sft", "2b-turbo": "turbo"}  # kit name -> Cantata variant


@lru_cache
def manifest() -> dict:
    return json.loads((FIXTURES / "reference_manifest.json").read_text())["cases"]


@lru_cache
def inputs():
    return np.load(FIXTURES / "reference_inputs.npz")


@lru_cache
def outputs():
    return np.load(FIXTURES / "reference_outputs.npz")


def tolerance_class(key: str) -> str:
    case, name = key.rsplit("/", 1)
    return manifest()[case]["outputs"][name]["tol"]


def assert_matches(key: str, ours) -> None:
    """Compare with the official output under the kit's tolerance class for `key`."""
    ref = outputs()[key]
    ours = np.asarray(ours)
    assert ours.shape == ref.shape, f"{key}: shape {ours.shape} != {ref.shape}"
    cls = tolerance_class(key)
    if cls == "exact":
        assert np.array_equal(ours, ref), f"{key}: not bit-identical"
        return
    rel_tol, max_tol, cos_tol = TOLERANCES[cls]
    r, c = ref.astype(np.float64).ravel(), ours.astype(np.float64).ravel()
    rel = np.linalg.norm(c - r) / np.linalg.norm(r)
    max_rel = np.abs(c - r).max() / np.abs(r).max()
    cos = float(c @ r / (np.linalg.norm(c) * np.linalg.norm(r)))
    assert rel <= rel_tol and max_rel <= max_tol and cos >= cos_tol, (
        f"{key} ({cls}): rel L2 {rel:.3e}, max-abs-rel {max_rel:.3e}, cosine {cos:.12f}"
    )
