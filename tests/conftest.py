import shutil
from pathlib import Path

import pytest
import torch

from cantata.models.tiny import qwen_tokenizer_dir
from cantata.pipeline.pipeline import CantataPipeline
from parity import FIXTURES, VARIANTS

torch.set_num_threads(max(1, min(4, torch.get_num_threads())))


@pytest.fixture(scope="session")
def parity_root(tmp_path_factory) -> Path:
    """The parity kit's checkpoint root, with the Qwen3 tokenizer files put back in."""
    root = tmp_path_factory.mktemp("parity") / "checkpoints"
    shutil.copytree(FIXTURES / "checkpoints", root)
    for f in qwen_tokenizer_dir().iterdir():
        shutil.copy(f, root / "Qwen3-Embedding-0.6B" / f.name)
    return root


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """Tiny random checkpoints (XL SFT, XL base, 2B turbo) written by `make-tiny`'s code."""
    from cantata.models.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoints", ["xl-sft", "xl-base", "turbo"])


@pytest.fixture(scope="module")
def pipelines(parity_root):
    """`pipelines(kit_variant)`: the pipeline of a parity-kit variant on CPU fp32, loaded once."""
    cache = {}

    def get(kit_variant: str) -> CantataPipeline:
        if kit_variant not in cache:
            cache[kit_variant] = CantataPipeline.from_pretrained(
                parity_root, VARIANTS[kit_variant], device="cpu", dtype="fp32", download=False)
        return cache[kit_variant]

    return get
