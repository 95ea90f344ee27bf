"""Memory tiers (issue 9): each tier generates what `high` generates -- bit for bit where no
weights are quantized -- and `choose_tier` fits XL SFT on 12, 16 and 24 GB cards."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from cantata.models.speed.memory import Residency, apply_tier, choose_tier, decode_beside_sampling, tier_bytes
from cantata.models.vocabulary import MEMORY_TIERS
from cantata.pipeline import CantataPipeline, GenerationRequest

REQUEST = GenerationRequest(caption="lo-fi hip hop", lyrics="[Verse]\nla la", duration=10, seeds=[5], steps=4)
GiB = 2**30


def generate(tiny_root, tier: str):
    pipe = CantataPipeline.from_pretrained(tiny_root, "xl-sft", device="cpu", dtype="fp32", download=False)
    apply_tier(pipe, tier)
    return pipe, pipe.generate(REQUEST)


@pytest.fixture(scope="module")
def high(tiny_root):
    return generate(tiny_root, "high")[1]


@pytest.mark.parametrize("tier", ["balanced", "offload"])
def test_offloading_tiers_give_the_same_audio_bit_for_bit(tiny_root, high, tier):
    pipe, result = generate(tiny_root, tier)
    assert torch.equal(result.audio, high.audio) and torch.equal(result.latents, high.latents)
    assert pipe.memory_tier == tier
    assert any(m is pipe.vae for m in pipe.residency.offloaded)
    assert any(m is pipe.conditioner.text_encoder for m in pipe.residency.offloaded)
    streamed = [bool(layer._forward_pre_hooks) for layer in pipe.dit.transformer.layers]
    assert all(streamed) if tier == "offload" else not any(streamed)


def test_low_tier_is_int8_and_close(tiny_root, high):
    pipe, result = generate(tiny_root, "low")
    assert pipe.dit.transformer.layers[0].mlp.down_proj.weight.dtype == torch.int8
    rel = float((result.latents - high.latents).norm() / high.latents.norm())
    assert 0 < rel <= 2e-2  # INT8 changes the song a little (test_speed_weights.py: same bound)


@pytest.mark.parametrize("card_gib, tier", [(12, "low"), (16, "high"), (24, "high"), (8, "offload")])
def test_xl_sft_tier_for_common_cards(card_gib, tier):
    """Free memory of a card with about 0.7 GiB taken by the driver and CUDA context."""
    assert choose_tier(int((card_gib - 0.7) * GiB), "xl-sft") == tier


def test_tiers_need_less_memory_in_order():
    needs = [tier_bytes("xl-sft", t) for t in MEMORY_TIERS]
    assert needs == sorted(needs, reverse=True)
    with pytest.raises(ValueError, match="auto, high, balanced, low, offload"):
        tier_bytes("xl-sft", "medium")


@pytest.mark.parametrize("tier, beside", [("high", True), ("balanced", False), ("low", False), ("offload", False)])
def test_the_vae_decodes_beside_sampling_only_where_everything_stays_resident(tier, beside):
    assert decode_beside_sampling(tier) is beside


def test_apply_tier_sets_where_the_worker_decodes(tiny_root):
    pipe = CantataPipeline.from_pretrained(tiny_root, "xl-sft", device="cpu", dtype="fp32", download=False)
    assert pipe.decode_beside_sampling is True  # loaded in `high`
    apply_tier(pipe, "balanced")
    assert pipe.decode_beside_sampling is False


class _Placed(nn.Module):
    """Records where `Residency` sends it (two devices without a GPU)."""

    def __init__(self):
        super().__init__()
        self.moves = []

    def to(self, device):
        self.moves.append(str(device))
        return self


def test_residency_parks_a_module_two_threads_use_only_when_the_last_one_leaves():
    """The worker's finisher decodes with the VAE while the worker thread encodes a source with
    it: the first user's exit must not pull it off the device under the second."""
    vae = _Placed()
    residency = Residency(torch.device("cuda"), (vae,), parking="cpu")
    assert vae.moves == ["cpu"]
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen_after_first_left = []

    def first():
        with residency.using(vae):
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second():
        first_in.wait(10)
        with residency.using(vae):
            second_in.set()
            first_out.wait(10)
            seen_after_first_left.extend(vae.moves)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen_after_first_left == ["cpu", "cuda"]  # moved in once, still in after the first left
    assert vae.moves == ["cpu", "cuda", "cpu"]  # parked once, by the last user
