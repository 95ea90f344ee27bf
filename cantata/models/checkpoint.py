"""Find, download and read official ACE-Step checkpoint files.

Only tensors are read: safetensors files, and `silence_latent.pt` through
`torch.load(weights_only=True)`. Python files that ship in the official DiT directories are
never imported or executed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from .variants import MAIN_REPO, TEXT_ENCODER_DIR, VAE_DIR, Variant

log = logging.getLogger(__name__)

DEFAULT_ROOT_ENV = "CANTATA_CHECKPOINTS"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match the expected layout."""


def default_root() -> Path:
    """`$CANTATA_CHECKPOINTS`, else `~/.cache/cantata/checkpoints`."""
    env = os.environ.get(DEFAULT_ROOT_ENV)
    return Path(env) if env else Path.home() / ".cache" / "cantata" / "checkpoints"


# -- locating files -------------------------------------------------------------------------


def weight_files(dit_dir: Path) -> list[Path]:
    """`model.safetensors`, or the shards named by `model.safetensors.index.json`."""
    single = dit_dir / "model.safetensors"
    index = dit_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted({dit_dir / name for name in weight_map.values()})
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise CheckpointError(f"{dit_dir}: shard(s) named in the index are missing: {', '.join(missing)}")
        return shards
    if single.is_file():
        return [single]
    raise CheckpointError(f"{dit_dir}: no model.safetensors and no model.safetensors.index.json")


def _missing_parts(root: Path, variant: Variant) -> list[str]:
    dit = root / variant.dirname
    need = {
        f"{variant.dirname}/config.json": dit / "config.json",
        f"{variant.dirname}/silence_latent.pt": dit / "silence_latent.pt",
        f"{VAE_DIR}/config.json": root / VAE_DIR / "config.json",
        f"{TEXT_ENCODER_DIR}/config.json": root / TEXT_ENCODER_DIR / "config.json",
        f"{TEXT_ENCODER_DIR}/tokenizer.json": root / TEXT_ENCODER_DIR / "tokenizer.json",
    }
    missing = [name for name, path in need.items() if not path.is_file()]
    if dit.is_dir():
        try:
            weight_files(dit)
        except CheckpointError:
            missing.append(f"{variant.dirname}/model.safetensors (or shards + index)")
    else:
        missing.append(f"{variant.dirname}/model.safetensors (or shards + index)")
    return missing


def ensure_checkpoint(root: Path, variant: Variant, download: bool = True) -> Path:
    """Return `root` once it holds everything `variant` needs, downloading what is missing.

    Raises `CheckpointError` with the exact files and Hub repositories when they are missing
    and cannot be downloaded (offline, no hub access, or `download=False`).
    """
    root = Path(root)
    missing = _missing_parts(root, variant)
    if not missing:
        return root
    if download and os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "TRUE"):
        try:
            download_missing(root, variant, missing)
        except Exception as exc:  # network, auth, disk: all end in the same instruction
            log.warning("download failed: %s", exc)
        missing = _missing_parts(root, variant)
        if not missing:
            return root
    raise CheckpointError(_instructions(root, variant, missing))


def _instructions(root: Path, variant: Variant, missing: list[str]) -> str:
    main = f"huggingface-cli download {MAIN_REPO} --include '{VAE_DIR}/*' '{TEXT_ENCODER_DIR}/*' --local-dir {root}"
    if variant.hub_subfolder:
        dit = f"huggingface-cli download {MAIN_REPO} --include '{variant.dirname}/*' --local-dir {root}"
    else:
        dit = f"huggingface-cli download {variant.repo_id} --local-dir {root / variant.dirname}"
    return (
        f"checkpoint for {variant.name} is incomplete under {root}; missing: {', '.join(missing)}.\n"
        f"Download it on a machine with Hugging Face access and copy it here:\n  {main}\n  {dit}\n"
        f"(or pass --checkpoints DIR / set {DEFAULT_ROOT_ENV} to a directory that already holds them)"
    )


def download_missing(root: Path, variant: Variant, missing: list[str]) -> None:
    """Fetch the missing parts of `variant` (or any spec with `dirname`, `repo_id` and
    `hub_subfolder`, such as a planner) from the Hub into `root`."""
    from huggingface_hub import snapshot_download  # progress bars come from huggingface_hub's tqdm

    never = ["*.py", "*.pyc", "*.md", ".gitattributes"]
    shared = [m.split("/")[0] for m in missing if m.split("/")[0] in (VAE_DIR, TEXT_ENCODER_DIR)]
    bundle = [f"{d}/*" for d in sorted(set(shared))]
    if variant.hub_subfolder and any(m.startswith(variant.dirname) for m in missing):
        bundle.append(f"{variant.dirname}/*")
    if bundle:
        log.info("downloading %s from %s into %s", bundle, MAIN_REPO, root)
        snapshot_download(MAIN_REPO, allow_patterns=bundle, ignore_patterns=never, local_dir=root)
    if not variant.hub_subfolder and any(m.startswith(variant.dirname) for m in missing):
        log.info("downloading %s into %s", variant.repo_id, root / variant.dirname)
        snapshot_download(variant.repo_id, ignore_patterns=never, local_dir=root / variant.dirname)


# -- reading tensors ------------------------------------------------------------------------


def iter_tensors(files: list[Path], device: torch.device, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield `(key, tensor)` one at a time, already cast and placed.

    The fp32 Hub weights are converted tensor by tensor, so peak memory is the cast model plus
    one fp32 tensor, never two copies of the model.
    """
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                t = f.get_tensor(key)
                if t.is_floating_point():
                    t = t.to(dtype=dtype)
                yield key, t.to(device)


def load_silence_latent(dit_dir: Path) -> torch.Tensor:
    """`silence_latent.pt` as `[1, frames, 64]` float32 (stored as `[1, 64, frames]`)."""
    path = dit_dir / "silence_latent.pt"
    t = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(t, torch.Tensor) or t.ndim != 3:
        raise CheckpointError(f"{path}: expected a [1, C, T] tensor, got {type(t).__name__}")
    return t.transpose(1, 2).contiguous().float()
