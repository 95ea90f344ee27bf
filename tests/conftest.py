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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small per-token tensor ops on a shared 2-core box: one thread is many times faster (the LM
    kit shows the official results do not depend on the thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def planner_root(tmp_path_factory) -> Path:
    """Tiny random XL SFT checkpoints plus a tiny 1.7B planner with the real vocabulary, written once."""
    from cantata.models.tiny import write_tiny_checkpoint
    from cantata.planner.tiny import write_tiny_planner

    root = tmp_path_factory.mktemp("tiny-with-planner")
    write_tiny_checkpoint(root, ["xl-sft"])
    write_tiny_planner(root, "1.7B")
    return root
