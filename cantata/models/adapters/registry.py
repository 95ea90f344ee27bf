"""The adapter folder (`--loras DIR`) and the device-side cache of loaded adapters.

Layout: one sub-folder per adapter, `<dir>/<name>/`, holding a copy of the adapter as it was
given (a PEFT directory's files, a LoKr file or a single peer `.safetensors`) and
`cantata-lora.json`, written last by `install` after the adapter loaded against its base model's
shapes. A sub-folder without that file is not an adapter (an install in progress, or something
else), so a half-copied adapter is never offered.

The server never restarts to learn of a new adapter: `entries()` rescans the folder when its
modification time changed (an install renames a finished folder into place, which touches it),
so a lookup costs one `stat` when nothing changed.

`AdapterCache` keeps loaded adapters on the model's device, least recently used first out, within
a byte budget; an adapter larger than the whole budget is still loaded for the batch that needs
it, and is the first to go.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..variants import Variant
from .deltas import Adapter
from .errors import AdapterError
from .loading import load_adapter

METADATA_FILE = "cantata-lora.json"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
AIR_PREFIX = "cantata-lora:"


def architecture(variant: Variant) -> str:
    """The shape family an adapter fits: the XL models share one set of shapes, the 2B ones another."""
    return "ace-step-1.5-xl" if variant.xl else "ace-step-1.5"


def adapter_air(name: str) -> str:
    """The AIR an installed adapter answers to besides its name (`cantata-lora:<name>@1`)."""
    return f"{AIR_PREFIX}{name}@1"


@dataclass(frozen=True)
class LoraEntry:
    """One installed adapter: where it lives and which model it was validated against."""

    name: str
    path: Path  # the adapter itself (a directory or a .safetensors file) inside the registry
    base: str  # the variant it was installed for (short name)
    architecture: str
    kind: str  # lora | lokr
    modules: int  # adapted modules
    bytes: int  # tensor bytes as stored

    @property
    def air(self) -> str:
        return adapter_air(self.name)

    def fits(self, variant: Variant) -> bool:
        return self.architecture == architecture(variant)


class LoraRegistry:
    """The adapters installed under `folder` (which need not exist yet)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._stamp: float | None = None
        self._entries: dict[str, LoraEntry] = {}

    def entries(self) -> list[LoraEntry]:
        """Every installed adapter, by name; rescanned only when the folder changed."""
        with self._lock:
            try:
                stamp = self.folder.stat().st_mtime_ns
            except FileNotFoundError:
                stamp = None
            if stamp != self._stamp or stamp is None:
                self._entries = _scan(self.folder) if stamp is not None else {}
                self._stamp = stamp
            return [self._entries[name] for name in sorted(self._entries)]

    def find(self, name_or_air: str) -> LoraEntry | None:
        """An adapter by its name or its AIR."""
        name = name_or_air
        if name.startswith(AIR_PREFIX) and name.endswith("@1"):
            name = name[len(AIR_PREFIX):-2]
        return next((e for e in self.entries() if e.name == name), None)

    def install(self, source: str | Path, variant: Variant, transformer: nn.Module, name: str | None = None) -> LoraEntry:
        """Validate `source` against `transformer` (the base model's shapes; parameters may be on
        the meta device) and copy it into the folder under `name` (default: its basename without
        `.safetensors`). Refuses a name already installed."""
        source = Path(source)
        name = name or (source.stem if source.suffix == ".safetensors" else source.name)
        if not NAME_PATTERN.fullmatch(name):
            raise AdapterError(f"adapter name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
                               "starting with a letter or digit")
        if self.find(name) is not None or (self.folder / name).exists():
            raise AdapterError(f"an adapter named {name!r} is already installed in {self.folder}")
        adapter = load_adapter(source, transformer, name)
        self.folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.folder))
        try:
            copied = staging / source.name
            if source.is_dir():
                # Only what the loader reads: safetensors and the PEFT config, never code or pickles.
                copied.mkdir()
                for file in source.iterdir():
                    if file.is_file() and (file.suffix == ".safetensors" or file.name == "adapter_config.json"):
                        shutil.copy2(file, copied / file.name)
            else:
                shutil.copy2(source, copied)
            meta = {"name": name, "adapter": source.name, "base": variant.name,
                    "architecture": architecture(variant), "kind": adapter.kind, "modules": len(adapter.deltas),
                    "bytes": adapter_bytes(adapter)}
            (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            staging.rename(self.folder / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        entry = self.find(name)
        assert entry is not None
        return entry


def base_shapes(checkpoints: str | Path, variant: Variant) -> nn.Module:
    """The variant's DiT decoder with its parameters on the meta device: the shapes an adapter is
    checked against at install, read from the checkpoint's `config.json` alone (no weights)."""
    from ..acestep import AceStepDiT
    from ..checkpoint import CheckpointError
    from ..config import DitConfig

    config_file = Path(checkpoints) / variant.dirname / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{config_file}: not found; the adapter is checked against {variant.name}'s "
                              "shapes (download the checkpoint, or use --demo for the tiny demo models)")
    return AceStepDiT.build_empty(DitConfig.from_file(config_file))["transformer"]


def _scan(folder: Path) -> dict[str, LoraEntry]:
    found: dict[str, LoraEntry] = {}
    for meta_file in folder.glob(f"*/{METADATA_FILE}"):
        directory = meta_file.parent
        if directory.name.startswith("."):
            continue
        try:
            meta = json.loads(meta_file.read_text())
            entry = LoraEntry(name=directory.name, path=directory / meta["adapter"], base=meta["base"],
                              architecture=meta["architecture"], kind=meta["kind"], modules=int(meta["modules"]),
                              bytes=int(meta["bytes"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged entry is not offered; `cantata lora list` shows what is
        found[entry.name] = entry
    return found


def adapter_bytes(adapter: Adapter) -> int:
    """Bytes the adapter's tensors take (what the cache budget counts)."""
    total = 0
    for delta in adapter.deltas.values():
        for value in vars(delta).values():
            if hasattr(value, "element_size"):
                total += value.numel() * value.element_size()
    return total


class AdapterCache:
    """Loaded adapters for one transformer, keyed by path, kept within `budget_bytes` (LRU)."""

    def __init__(self, transformer: nn.Module, budget_bytes: int) -> None:
        self.transformer = transformer
        self.budget_bytes = budget_bytes
        self._loaded: OrderedDict[str, tuple[Adapter, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str | Path) -> Adapter:
        key = str(Path(path).resolve())
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key][0]
        adapter = load_adapter(key, self.transformer)
        size = adapter_bytes(adapter)
        with self._lock:
            self._loaded[key] = (adapter, size)
            self._loaded.move_to_end(key)
            while len(self._loaded) > 1 and self.loaded_bytes > self.budget_bytes:
                self._loaded.popitem(last=False)
        return adapter

    def resolve(self, choices: Sequence[tuple[object, float]]) -> list[tuple[Adapter, float]]:
        """(adapter or path, weight) pairs -> (Adapter, weight), weight-0 pairs dropped (the base model)."""
        return [(a if isinstance(a, Adapter) else self.get(a), float(w)) for a, w in choices if w != 0]

    @property
    def loaded_bytes(self) -> int:
        return sum(size for _, size in self._loaded.values())

    def cached(self) -> list[str]:
        with self._lock:
            return list(self._loaded)
