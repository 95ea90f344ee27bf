"""Loading casts while reading and never runs checkpoint code."""

from __future__ import annotations

import torch

from cantata.models.acestep import AceStepDiT
from cantata.pipeline import CantataPipeline


def test_fp32_checkpoint_is_cast_tensor_by_tensor(tiny_root):
    dit = AceStepDiT.from_dir(tiny_root / "acestep-v15-xl-sft", torch.device("cpu"), torch.bfloat16)
    for module in (dit.transformer, dit.condition_encoder, dit.audio_tokenizer, dit.detokenizer):
        assert {p.dtype for p in module.parameters()} == {torch.bfloat16}
        assert not any(p.is_meta for p in module.parameters())
    assert dit.silence_latent.dtype == torch.bfloat16 and dit.silence_latent.shape == (1, 15000, 64)


def test_python_files_in_a_checkpoint_are_never_executed(tiny_root, tmp_path):
    """The official DiT directories ship modeling code; loading must not import it."""
    import shutil

    root = tmp_path / "ckpt"
    shutil.copytree(tiny_root, root)
    marker = tmp_path / "executed"
    for name in ("modeling_acestep_v15_xl_base.py", "configuration_acestep_v15.py", "apg_guidance.py"):
        (root / "acestep-v15-xl-sft" / name).write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    pipe = CantataPipeline.from_pretrained(root, "xl-sft", device="cpu", dtype="fp32", download=False)
    assert pipe.variant.name == "xl-sft"
    assert not marker.exists()
