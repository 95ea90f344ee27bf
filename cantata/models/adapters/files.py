"""Reading adapter files: safetensors only, never pickles, never code."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import AdapterError


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors (on the CPU, as stored) and the string metadata of one safetensors file."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise AdapterError(f"{path}: not a readable safetensors file ({exc})") from None


def read_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise AdapterError(f"{path}: not a readable safetensors file ({exc})") from None


def read_json_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise AdapterError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value
