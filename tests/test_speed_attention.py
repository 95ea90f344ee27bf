"""Attention kernels (issue 9): SDPA without dense masks and FlexAttention band masks give the
dense-mask forward within 1e-5 (fp32, CPU), for equal-length, padded and bucketed batches."""

from __future__ import annotations

import pytest
import torch

from cantata.models.padded_dit import dit_forward
from cantata.models.speed import SpeedOptions, apply_speed, default_options
from cantata.models.speed.masks import layer_masks
from cantata.models.tiny import dit_config, random_dit

TOL = 1e-5


def rel_l2(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.double() - ref.double()).norm() / ref.double().norm())


def two_layer_mid() -> dict:
    """The mid XL widths, heads and 128-token window, one sliding and one full layer (speed)."""
    config = dit_config("xl-sft", "mid")
    return {**config, "num_hidden_layers": 2, "num_audio_decoder_hidden_layers": 2,
            "layer_types": config["layer_types"][:2]}


@pytest.fixture(scope="module", params=["tiny", "mid"])
def dit(request):
    """Random XL SFT DiTs; frames reach past the sliding window (16 tiny, 128 mid tokens)."""
    model = random_dit(dit_config("xl-sft", "tiny") if request.param == "tiny" else two_layer_mid(), seed=1)
    frames = 101 if request.param == "tiny" else 301  # odd: the patch conv's zero padding too
    return model, frames


def inputs(dit, frames: int, batch: int = 2, enc_tokens: int = 23):
    g = torch.Generator().manual_seed(7)
    cfg = dit.transformer.config
    x = torch.randn(batch, frames, 64, generator=g)
    context = torch.randn(batch, frames, 128, generator=g)
    enc = torch.randn(batch, enc_tokens, cfg.encoder_hidden_size, generator=g)
    t = torch.tensor([0.7] * batch)
    return x, t, enc, context


def forward(dit, options: SpeedOptions, *args, **kwargs) -> torch.Tensor:
    apply_speed(dit.transformer, options)
    with torch.no_grad():
        return dit_forward(dit.transformer, *args, **kwargs)


@pytest.mark.parametrize("kind", ["sdpa", "flex"])
def test_equal_lengths_match_the_dense_forward(dit, kind):
    model, frames = dit
    args = inputs(model, frames)
    dense = forward(model, SpeedOptions(), *args)
    assert rel_l2(forward(model, SpeedOptions(attention=kind), *args), dense) <= TOL


@pytest.mark.parametrize("kind", ["dense", "sdpa", "flex"])
def test_padded_batch_items_match_their_solo_forward(dit, kind):
    """Item 1 is 70 frames and 6 condition tokens shorter, zero-padded and masked."""
    model, frames = dit
    x, t, enc, context = inputs(model, frames)
    short, width = frames - 70, enc.shape[1] - 6
    x[1, short:] = 0
    context[1, short:] = 0
    enc[1, width:] = 0
    lengths, enc_lengths = torch.tensor([frames, short]), torch.tensor([enc.shape[1], width])
    batched = forward(model, SpeedOptions(attention=kind), x, t, enc, context, lengths, enc_lengths)
    solo0 = forward(model, SpeedOptions(), x[:1], t[:1], enc[:1], context[:1])
    solo1 = forward(model, SpeedOptions(), x[1:, :short], t[1:], enc[1:, :width], context[1:, :short])
    assert rel_l2(batched[:1], solo0) <= TOL
    assert rel_l2(batched[1:, :short], solo1) <= TOL


@pytest.mark.parametrize("kind", ["dense", "sdpa", "flex"])
def test_bucketed_lengths_match_the_exact_length(dit, kind):
    """Bucketing pads 101/301 frames to 375 and 23 tokens to 64, masked: the same velocities."""
    model, frames = dit
    args = inputs(model, frames)
    exact = forward(model, SpeedOptions(), *args)
    bucketed = forward(model, SpeedOptions(attention=kind, bucketing=True), *args)
    assert bucketed.shape == exact.shape
    assert rel_l2(bucketed, exact) <= TOL


def test_unpadded_kernel_masks_are_no_masks_or_booleans():
    """No dense additive mask when nothing is padded: full layers and cross attention get none,
    the sliding band is boolean (sdpa) or a block-sparse BlockMask (flex)."""
    from torch.nn.attention.flex_attention import BlockMask

    sdpa = layer_masks("sdpa", 300, 128, None, 40, None, torch.float32, torch.device("cpu"))
    assert sdpa.full is None and sdpa.cross is None and sdpa.sliding.dtype == torch.bool
    flex = layer_masks("flex", 300, 128, None, 40, None, torch.float32, torch.device("cpu"))
    assert flex.full is None and flex.cross is None and isinstance(flex.sliding, BlockMask)
    # 3 blocks of 128 tokens: the band touches 7 of the 9 block pairs (corners skipped).
    assert int(flex.sliding.kv_num_blocks.sum() + flex.sliding.full_kv_num_blocks.sum()) == 7


@pytest.mark.parametrize("options", [SpeedOptions(attention="sdpa", fused_projections=True),
                                     SpeedOptions(attention="flex", bucketing=True)], ids=["sdpa-fused", "flex-bucketed"])
def test_kernel_paths_reproduce_the_parity_kit_forward(pipelines, options):
    """The official DiT forward of the parity kit (tests/test_parity.py) through the kernels."""
    from parity import DIT_KIT as kit

    model = pipelines("xl-sft").dit
    key = "xl-sft/dit"
    t = torch.from_numpy(kit.inputs[f"{key}/timestep"])
    x, enc, ctx = (torch.from_numpy(kit.inputs[f"{key}/{n}"]) for n in ("hidden_states", "encoder_hidden_states", "context_latents"))
    fast = forward(model, options, x, t, enc, ctx)
    apply_speed(model.transformer, SpeedOptions())
    kit.assert_matches(f"{key}/velocity", fast)


def test_cpu_defaults_are_the_parity_forward():
    """On CPU no switch wins measurably (bench/RESULTS.md): the defaults are the dense path."""
    assert default_options("cpu") == SpeedOptions()
    assert default_options("cuda").attention == "sdpa"
