"""Find, download and load the official 5 Hz LM planner directories (lm.md §1).

The planners sit beside the DiT under the same checkpoints root, one directory each. Only
`config.json`, safetensors and `tokenizer.json` are read: no remote code, no pickles. The
download and the "copy it here" message follow `cantata.models.checkpoint`, whose helpers do
the work.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from ..models.checkpoint import DEFAULT_ROOT_ENV, CheckpointError, download_missing, weight_files
from ..models.variants import MAIN_REPO
from .tokenizer import PlannerTokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannerSpec:
    """One planner size: its directory under the checkpoints root and where the Hub keeps it."""

    name: str  # "0.6B" | "1.7B" | "4B"
    dirname: str
    repo_id: str

    @property
    def hub_subfolder(self) -> str | None:
        """The 1.7B ships inside the main bundle, the others in their own repositories."""
        return self.dirname if self.repo_id == MAIN_REPO else None


PLANNERS: dict[str, PlannerSpec] = {
    s.name: s for s in (
        PlannerSpec("0.6B", "acestep-5Hz-lm-0.6B", "ACE-Step/acestep-5Hz-lm-0.6B"),
        PlannerSpec("1.7B", "acestep-5Hz-lm-1.7B", MAIN_REPO),
        PlannerSpec("4B", "acestep-5Hz-lm-4B", "ACE-Step/acestep-5Hz-lm-4B"),
    )
}
#: The official handler's planner when none is named.
DEFAULT_PLANNER = "1.7B"
#: `planner` settings besides the sizes: "auto" serves a complete planner found under the
#: checkpoints root (the default one first) and never downloads; "none" serves none.
AUTO_PLANNER, NO_PLANNER = "auto", "none"


def served_planner(root: str | Path, setting: str | None) -> str | None:
    """The planner a server with this `planner` setting serves (None: none). A size is served
    even when absent (it is downloaded like the DiT); "auto" only takes what is already there."""
    if setting is None or setting.lower() == NO_PLANNER:
        return None
    if setting.lower() != AUTO_PLANNER:
        return get_planner_spec(setting).name
    order = [DEFAULT_PLANNER, *(name for name in PLANNERS if name != DEFAULT_PLANNER)]
    return next((name for name in order if not _missing_parts(Path(root), PLANNERS[name])), None)


def get_planner_spec(name: str) -> PlannerSpec:
    """'1.7B', '1.7b' or the directory name 'acestep-5Hz-lm-1.7B'."""
    for spec in PLANNERS.values():
        if name.upper() == spec.name.upper() or name == spec.dirname:
            return spec
    raise ValueError(f"unknown planner {name!r}; use one of {', '.join(PLANNERS)}")


def _missing_parts(root: Path, spec: PlannerSpec) -> list[str]:
    d = root / spec.dirname
    missing = [f"{spec.dirname}/{f}" for f in ("config.json", "tokenizer.json", "tokenizer_config.json")
               if not (d / f).is_file()]
    try:
        weight_files(d)
    except CheckpointError:
        missing.append(f"{spec.dirname}/model.safetensors (or shards + index)")
    return missing


def ensure_planner(root: Path, spec: PlannerSpec, download: bool = True) -> Path:
    """The planner's directory once it is complete, downloading what is missing (like the DiT)."""
    root = Path(root)
    missing = _missing_parts(root, spec)
    if missing and download and os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "TRUE"):
        try:
            download_missing(root, spec, missing)
        except Exception as exc:  # network, auth, disk: all end in the same instruction
            log.warning("download failed: %s", exc)
        missing = _missing_parts(root, spec)
    if missing:
        raise CheckpointError(_instructions(root, spec, missing))
    return root / spec.dirname


def _instructions(root: Path, spec: PlannerSpec, missing: list[str]) -> str:
    if spec.hub_subfolder:
        cmd = f"huggingface-cli download {MAIN_REPO} --include '{spec.dirname}/*' --local-dir {root}"
    else:
        cmd = f"huggingface-cli download {spec.repo_id} --local-dir {root / spec.dirname}"
    return (
        f"checkpoint for planner {spec.name} is incomplete under {root}; missing: {', '.join(missing)}.\n"
        f"Download it on a machine with Hugging Face access and copy it here:\n  {cmd}\n"
        f"(or pass --checkpoints DIR / set {DEFAULT_ROOT_ENV} to a directory that already holds them)"
    )


def load_planner(root: str | Path, name: str = DEFAULT_PLANNER, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, download: bool = True
                 ) -> tuple[Qwen3ForCausalLM, PlannerTokenizer, PlannerSpec]:
    """The planner model (eval mode, on `device` in `dtype`) and its tokenizer.

    Official: bf16 weights upcast to float32 on CPU, bf16 on CUDA (lm.md §1.1).
    """
    spec = get_planner_spec(name)
    d = ensure_planner(Path(root), spec, download)
    config = json.loads((d / "config.json").read_text())
    if config.get("model_type") != "qwen3":
        raise CheckpointError(f"{d}/config.json: model_type {config.get('model_type')!r}, expected 'qwen3'")
    model = Qwen3ForCausalLM.from_pretrained(d, config=Qwen3Config.from_dict(config), dtype=dtype,
                                             use_safetensors=True)
    model.to(torch.device(device)).eval()
    return model, PlannerTokenizer.from_dir(d), spec
