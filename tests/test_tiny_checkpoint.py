"""The random checkpoint writer must produce exactly what the official tooling lays out.

Compared against the parity kit's tiny checkpoint (written by the official code) and read back
through the real loaders, so a drift in either the writer or `map_key` shows up here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import parity
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, Qwen3Model

from cantata.models.acestep import AceStepDiT, map_key
from cantata.models.checkpoint import CheckpointError
from cantata.models.config import DitConfig
from cantata.models.tiny import dit_config, official_key, write_tiny_checkpoint
from cantata.models.variants import TEXT_ENCODER_DIR, VAE_DIR, VARIANTS

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """All six variants, seed 0, written once for the module."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), VARIANTS)


def header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}


def load_config(path: Path) -> dict:
    return json.loads(path.read_text())


# -- key names ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["tiny", "full"])
@pytest.mark.parametrize("variant", ["xl-sft", "sft"])
def test_official_key_round_trips_every_key(variant, size):
    modules = AceStepDiT.build_empty(DitConfig(dit_config(variant, size)))
    for attr, module in modules.items():
        for key in module.state_dict():
            if (attr, key) != ("condition_encoder", "silence_latent"):
                assert map_key(official_key(attr, key)) == (attr, key)


# -- same layout as the parity kit ----------------------------------------------------------


@pytest.mark.parametrize("dirname", ["acestep-v15-xl-sft", "acestep-v15-sft", "acestep-v15-turbo"])
def test_dit_matches_parity_layout(root, parity_root, dirname):
    assert header(root / dirname / "model.safetensors") == header(parity_root / dirname / "model.safetensors")
    ours, theirs = load_config(root / dirname / "config.json"), load_config(parity_root / dirname / "config.json")
    assert ours.keys() == theirs.keys()
    assert ours == theirs  # at size "tiny" even the values are the parity kit's


def test_text_encoder_and_vae_match_parity_layout(root, parity_root):
    rel = f"{TEXT_ENCODER_DIR}/model.safetensors"
    assert header(root / rel) == header(parity_root / rel)
    # The VAE keeps the key names; its widths differ: the kit's 4-channel encoder yields 2-dim
    # latents (decode-only), ours encodes to the 64 channels the DiT reads.
    rel = f"{VAE_DIR}/diffusion_pytorch_model.safetensors"
    assert header(root / rel).keys() == header(parity_root / rel).keys()
    assert load_config(root / TEXT_ENCODER_DIR / "config.json") == load_config(parity_root / TEXT_ENCODER_DIR / "config.json")
    assert load_config(root / VAE_DIR / "config.json").keys() == load_config(parity_root / VAE_DIR / "config.json").keys()


@pytest.mark.parametrize("rel", ["acestep-v15-xl-sft/model.safetensors", "acestep-v15-sft/model.safetensors",
                                 f"{TEXT_ENCODER_DIR}/model.safetensors"])
def test_weight_statistics_follow_the_parity_recipe(root, parity_root, rel):
    """Same recipe => per-tensor spread within sampling noise of the parity kit's."""
    ours, theirs = load_file(root / rel), load_file(parity_root / rel)
    for key, ref in theirs.items():
        if ref.numel() >= 256:
            assert ours[key].std() / ref.std() == pytest.approx(1.0, abs=0.15), key
        bound = 6 * ref.std() * (2 / ref.numel()) ** 0.5 + 1e-6
        assert abs(ours[key].mean() - ref.mean()) <= bound, key


def test_full_sizes_are_the_real_models():
    """model.md §2.2: XL ≈ 4.99 B parameters (9.97 GB in bf16), 2B ≈ 2.4 B."""
    def count(variant):
        modules = AceStepDiT.build_empty(DitConfig(dit_config(variant, "full")))
        return sum(p.numel() for m in modules.values() for p in m.parameters())

    assert 4.98e9 < count("xl-turbo") < 5.0e9
    assert 2.38e9 < count("turbo") < 2.41e9


# -- the loaders accept it --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_loads_strictly(root, name):
    variant = VARIANTS[name]
    dit = AceStepDiT.from_dir(root / variant.dirname, CPU, torch.float32)
    assert dit.config.is_xl == variant.xl and dit.config.is_turbo == variant.turbo
    assert dit.config.get("model_version") == name.rsplit("-", 1)[-1]
    assert dit.silence_latent.shape == (1, 15000, 64)
    assert not list(root.rglob("*.py"))


def test_sharded_xl_loads_and_holds_the_same_tensors(root, tmp_path):
    out = write_tiny_checkpoint(tmp_path, ["xl-sft"], shards=3) / "acestep-v15-xl-sft"
    names = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert sorted(p.name for p in out.glob("model*.safetensors")) == names
    index = load_config(out / "model.safetensors.index.json")
    single = load_file(root / "acestep-v15-xl-sft" / "model.safetensors")
    assert index["weight_map"].keys() == single.keys() and set(index["weight_map"].values()) == set(names)
    shards = {k: v for name in names for k, v in load_file(out / name).items()}
    assert shards.keys() == single.keys() and all(torch.equal(shards[k], single[k]) for k in single)
    assert AceStepDiT.from_dir(out, CPU, torch.float32).silence_latent.shape == (1, 15000, 64)

    write_tiny_checkpoint(tmp_path, ["xl-sft"], shards=1)  # rewriting replaces the shards
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "silence_latent.pt"]
    AceStepDiT.from_dir(out, CPU, torch.float32)


def test_text_encoder_loads_with_transformers(root):
    model, info = Qwen3Model.from_pretrained(root / TEXT_ENCODER_DIR, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.get_input_embeddings().weight.shape == (151669, 32)


def test_tokenizer_gives_the_official_ids(root, parity_root):
    """Ids the official code recorded for the caption and lyric prompts, `<|endoftext|>` included."""
    tokenizer = AutoTokenizer.from_pretrained(root / TEXT_ENCODER_DIR)
    case = parity.DIT_KIT.manifest["xl-sft/cond"]
    for field, ids in (("caption_prompts", "text_token_ids"), ("lyric_prompts", "lyric_token_ids")):
        prompt, recorded = case[field][0], parity.DIT_KIT.inputs[f"xl-sft/cond/{ids}"][0]
        ours = tokenizer(prompt).input_ids
        assert ours == recorded[: len(ours)].tolist() and 151643 in ours
        assert ours == AutoTokenizer.from_pretrained(parity_root / TEXT_ENCODER_DIR)(prompt).input_ids


# -- determinism ------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(root, tmp_path):
    rel = "acestep-v15-xl-sft/model.safetensors"
    same = write_tiny_checkpoint(tmp_path / "a", ["xl-sft"], seed=0)
    other = write_tiny_checkpoint(tmp_path / "b", ["xl-sft"], seed=1)
    assert (same / rel).read_bytes() == (root / rel).read_bytes()  # other variants alongside don't matter
    assert (other / rel).read_bytes() != (root / rel).read_bytes()


# -- key-mapping errors name the key ------------------------------------------------------------


def _drop(state):
    del state["decoder.layers.0.self_attn.q_proj.weight"]


def _extra(state):
    state["decoder.layers.0.extra_proj.weight"] = torch.zeros(3)


def _outside(state):
    state["bogus.weight"] = torch.zeros(3)


def _reshape(state):
    state["encoder.lyric_encoder.layers.1.mlp.up_proj.weight"] = torch.zeros(7, 64)


@pytest.mark.parametrize("corrupt, key", [
    (_drop, "decoder.layers.0.self_attn.q_proj.weight"),
    (_extra, "decoder.layers.0.extra_proj.weight"),
    (_reshape, "encoder.lyric_encoder.layers.1.mlp.up_proj.weight"),
    (_outside, "bogus.weight"),
])
def test_corrupt_checkpoint_error_names_the_key(root, tmp_path, corrupt, key):
    dit_dir = shutil.copytree(root / "acestep-v15-xl-sft", tmp_path / "acestep-v15-xl-sft")
    state = load_file(dit_dir / "model.safetensors")
    corrupt(state)
    save_file(state, dit_dir / "model.safetensors")
    # The loader reports keys as they are spelled in the checkpoint file.
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        AceStepDiT.from_dir(dit_dir, CPU, torch.float32)


def test_bad_arguments_fail_before_writing(tmp_path):
    with pytest.raises(ValueError, match="size"):
        write_tiny_checkpoint(tmp_path, size="huge")
    with pytest.raises(KeyError):
        write_tiny_checkpoint(tmp_path, ["xl-nope"])
    with pytest.raises(ValueError, match="shards"):
        write_tiny_checkpoint(tmp_path, shards=0)
    assert not any(tmp_path.iterdir())
