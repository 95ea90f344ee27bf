"""Shared access to the parity kits (DiT, LoRA, LM planner) and their tolerance classes.

Each kit is a folder of `<prefix>_manifest.json` (cases, settings, each output's tolerance class),
`<prefix>_inputs.npz` and `<prefix>_outputs.npz` (the official results), all checked the way the
kits' own `compare.py` checks them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
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


def errors(ref, ours) -> tuple[float, float, float]:
    """(rel L2, max-abs-rel, cosine) of `ours` against `ref`, as the kits' compare.py computes them."""
    r, c = np.asarray(ref, np.float64).ravel(), np.asarray(ours, np.float64).ravel()
    rel = np.linalg.norm(c - r) / np.linalg.norm(r)
    return rel, np.abs(c - r).max() / np.abs(r).max(), float(c @ r / (np.linalg.norm(c) * np.linalg.norm(r)))


@dataclass(frozen=True)
class Kit:
    folder: Path
    prefix: str  # "reference", "lora_reference", "lm_reference"

    @cached_property
    def manifest(self) -> dict:
        return json.loads((self.folder / f"{self.prefix}_manifest.json").read_text())["cases"]

    @cached_property
    def inputs(self) -> dict[str, np.ndarray]:
        return self._load("inputs")

    @cached_property
    def outputs(self) -> dict[str, np.ndarray]:
        return self._load("outputs")

    def _load(self, which: str) -> dict[str, np.ndarray]:
        with np.load(self.folder / f"{self.prefix}_{which}.npz") as f:
            return {k: f[k] for k in f.files}

    def tolerance_class(self, key: str) -> str:
        case, name = key.rsplit("/", 1)
        return self.manifest[case]["outputs"][name]["tol"]

    def assert_matches(self, key: str, ours) -> None:
        """Compare with the official output under the kit's tolerance class for `key`."""
        ref = self.outputs[key]
        ours = np.asarray(ours)
        assert ours.shape == ref.shape, f"{key}: shape {ours.shape} != {ref.shape}"
        cls = self.tolerance_class(key)
        if cls == "exact":
            assert np.array_equal(ours, ref), f"{key}: not bit-identical"
            return
        rel_tol, max_tol, cos_tol = TOLERANCES[cls]
        rel, max_rel, cos = errors(ref, ours)
        assert rel <= rel_tol and max_rel <= max_tol and cos >= cos_tol, (
            f"{key} ({cls}): rel L2 {rel:.3e}, max-abs-rel {max_rel:.3e}, cosine {cos:.12f}"
        )


DIT_KIT = Kit(FIXTURES, "reference")
LORA_KIT = Kit(FIXTURES.parent / "parity-lora", "lora_reference")
LM_KIT = Kit(FIXTURES.parent / "parity-lm", "lm_reference")

