"""`load_adapter(path, transformer)`: what the official loader accepts, plus unambiguous peer files.

Dispatch as the official `add_lora` (lora.md §2): a LoKr file (by name or `lokr_config`
metadata), a directory holding one, or a PEFT directory (`adapter_config.json`). Beyond that, a
single LoRA/LoKr `.safetensors` without a config, as diffusers and ComfyUI take (lora.md §8), also
as the only `.safetensors` of a directory. Only safetensors are opened; pickles (`.bin`, `.pt`)
and any code in the directory are never read.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .deltas import Adapter
from .errors import AdapterError
from .files import read_metadata, read_safetensors
from .lokr import LOKR_FILE, has_lokr_keys, is_lokr, load_lokr_file
from .lora import PEFT_CONFIG, load_lora_file, load_peft_dir
from .names import DecoderTargets


def load_adapter(path: str | Path, transformer: nn.Module, name: str | None = None) -> Adapter:
    """Read an adapter for `transformer` (our DiT), check every key against it, and return its
    deltas on the transformer's device and dtype. `name` defaults to the path's basename, as
    officially."""
    path = Path(path)
    if not path.exists():
        raise AdapterError(f"{path}: no such file or directory")
    targets = DecoderTargets(transformer)
    weight = next(p for p in transformer.parameters() if p.is_floating_point())  # not an INT8 weight
    adapter = _load(path, targets, name or path.name)
    if not adapter.deltas:
        raise AdapterError(f"{path}: the adapter holds no tensors")
    return adapter.to(weight.device, weight.dtype)


def _load(path: Path, targets: DecoderTargets, name: str) -> Adapter:
    if path.is_file():
        if path.suffix != ".safetensors":
            raise AdapterError(f"{path}: only .safetensors adapter files are read")
        return _single_file(path, targets, name)
    if (path / LOKR_FILE).is_file():
        return _single_file(path / LOKR_FILE, targets, name)
    files = sorted(path.glob("*.safetensors"))
    for file in files:
        if is_lokr(file, read_metadata(file)):
            return _single_file(file, targets, name)
    if (path / PEFT_CONFIG).is_file():
        return load_peft_dir(path, targets, name)
    if len(files) == 1:
        return _single_file(files[0], targets, name)
    found = f"{len(files)} .safetensors files, none a LoKr" if files else "no .safetensors file"
    raise AdapterError(f"{path}: expected a PEFT LoRA directory containing {PEFT_CONFIG}, a LoKr "
                       f"{LOKR_FILE}, or a single adapter .safetensors file ({found})")


def _single_file(path: Path, targets: DecoderTargets, name: str) -> Adapter:
    tensors, metadata = read_safetensors(path)
    if is_lokr(path, metadata) or has_lokr_keys(tensors):
        return load_lokr_file(path, tensors, metadata, targets, name)
    return load_lora_file(path, tensors, metadata, targets, name)

