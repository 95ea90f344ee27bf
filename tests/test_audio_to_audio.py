"""Cover, repaint/outpaint, reference timbre and the base-model tasks from waveforms."""

from __future__ import annotations

import math
import random

import pytest
import torch

from cantata.pipeline import CantataPipeline, GenerationRequest, SourceAudio
from cantata.pipeline.encode import reference_clip, vae_encode

SR = 48_000


@pytest.fixture(scope="module")
def xl(tiny_root) -> CantataPipeline:
    return CantataPipeline.from_pretrained(tiny_root, "xl-sft", device="cpu", dtype="fp32", download=False)


@pytest.fixture(scope="module")
def base(tiny_root) -> CantataPipeline:
    return CantataPipeline.from_pretrained(tiny_root, "xl-base", device="cpu", dtype="fp32", download=False)


def tone(seconds: float, freq: float = 220.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return torch.stack([0.5 * torch.sin(2 * math.pi * freq * t), 0.4 * torch.sin(2 * math.pi * freq * 1.5 * t)])


def req(**kw) -> GenerationRequest:
    base_kw = dict(caption="cover it as jazz", lyrics="[Verse]\nla la la", seeds=[3], steps=4, duration=None)
    base_kw.update(kw)
    return GenerationRequest(**base_kw)


def test_vae_encode_is_seeded_and_25_hz(xl):
    audio = tone(1.0)
    a = vae_encode(xl.vae, audio, torch.Generator().manual_seed(1))
    b = vae_encode(xl.vae, audio, torch.Generator().manual_seed(1))
    c = vae_encode(xl.vae, audio, torch.Generator().manual_seed(2))
    assert a.shape == (1, 25, 64)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_tiled_encode_equals_the_whole_encode(xl, monkeypatch):
    """With the posterior mean (no sampling noise), overlap-discard tiles give the same latents
    as one pass, as long as the overlap covers the encoder's receptive field."""
    from diffusers.models.autoencoders.autoencoder_oobleck import OobleckDiagonalGaussianDistribution

    monkeypatch.setattr(OobleckDiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mean)
    audio = tone(3.0)
    whole = vae_encode(xl.vae, audio, torch.Generator(), chunk=SR * 4)
    overlap = 10 * 1920  # 0.4 s, frame-aligned like the official 2 s
    tiled = vae_encode(xl.vae, audio, torch.Generator(), chunk=SR + 2 * overlap, overlap=overlap)
    assert tiled.shape == whole.shape == (1, 75, 64)
    assert torch.allclose(tiled, whole, atol=1e-5 * whole.abs().max().item())


def test_reference_clip_takes_three_seeded_segments():
    audio = torch.arange(40 * SR, dtype=torch.float32).repeat(2, 1) / (40 * SR)
    clip = reference_clip(audio, random.Random(5))
    assert clip.shape == (2, 30 * SR)
    assert torch.equal(clip, reference_clip(audio, random.Random(5)))
    starts = [clip[0, i * 10 * SR].item() * 40 * SR for i in range(3)]
    third = 40 * SR // 3
    assert 0 <= starts[0] < third and third <= starts[1] < 2 * third and starts[2] >= 2 * third
    assert reference_clip(torch.zeros(2, SR), random.Random(0)) is None
    assert reference_clip(tone(4.0), random.Random(0)).shape == (2, 30 * SR)  # short: tiled


def test_cover_keeps_source_length_and_is_repeatable(xl):
    src = SourceAudio(waveform=tone(3.3))
    first = xl.generate(req(task="cover", source=src))
    again = xl.generate(req(task="cover", source=src))
    assert first.audio.shape == (1, 2, int(3.3 * SR))
    assert torch.equal(first.audio, again.audio)


def test_cover_strength_and_noise_strength_change_the_result(xl):
    src = SourceAudio(waveform=tone(3.0))
    full = xl.generate(req(task="cover", source=src)).latents
    half = xl.generate(req(task="cover", source=src, cover_strength=0.5)).latents
    steps_seen = []
    noised = xl.generate(req(task="cover", source=src, cover_noise_strength=0.7),
                         on_step=lambda d, t: steps_seen.append(t)).latents
    assert not torch.allclose(full, half) and not torch.allclose(full, noised)
    assert steps_seen and steps_seen[0] < 4  # started part-way down the schedule


def test_repaint_keeps_the_source_outside_the_window(xl):
    audio = tone(4.0)
    out = xl.generate(req(task="repaint", source=SourceAudio(waveform=audio), repaint_start=1.0, repaint_end=3.0,
                          repaint_mode="conservative")).audio[0]
    assert out.shape == audio.shape
    fade = int(0.05 * SR)
    outside = torch.cat([out[:, : 1 * SR - fade], out[:, 3 * SR + fade:]], dim=-1)
    source = torch.cat([audio[:, : 1 * SR - fade], audio[:, 3 * SR + fade:]], dim=-1)
    assert torch.allclose(outside, source, atol=1e-6)  # spliced back, not normalized
    assert (out[:, 1 * SR + fade: 3 * SR - fade] - audio[:, 1 * SR + fade: 3 * SR - fade]).abs().max() > 1e-2


def test_outpainting_extends_the_track(xl):
    audio = tone(3.0)
    before = xl.generate(req(task="repaint", source=SourceAudio(waveform=audio), repaint_start=-1.0, repaint_end=0.0))
    after = xl.generate(req(task="repaint", source=SourceAudio(waveform=audio), repaint_start=3.0, repaint_end=4.5))
    assert before.audio.shape[-1] == 4 * SR
    assert after.audio.shape[-1] == int(4.5 * SR)
    fade = int(0.025 * SR)  # balanced mode: 0.05 s · (1 − 0.5)
    assert torch.allclose(before.audio[0, :, 1 * SR + fade:], audio[:, fade:], atol=1e-6)
    assert torch.allclose(after.audio[0, :, : 3 * SR - fade], audio[:, : 3 * SR - fade], atol=1e-6)


def test_reference_audio_changes_timbre_conditioning(xl):
    """The timbre encoder reads the (seeded) 30 s clip instead of the silence latent."""
    plain = xl.generate(req(task="text2music", duration=6.0)).latents
    with_ref = xl.generate(req(task="text2music", duration=6.0, reference_audio=[tone(2.0, 330.0)])).latents
    assert not torch.allclose(plain, with_ref)


@pytest.mark.parametrize("task,extra", [("extract", {"track_name": "vocals"}),
                                        ("complete", {"track_classes": ["drums", "bass"]}),
                                        ("lego", {"track_name": "guitar", "repaint_start": 1.0, "repaint_end": 2.0})])
def test_base_model_tasks(base, task, extra):
    audio = tone(3.0)
    result = base.generate(req(task=task, source=SourceAudio(waveform=audio), **extra))
    assert result.audio.shape == (1, 2, 3 * SR)
    assert torch.isfinite(result.audio).all()


def test_sft_refuses_base_only_tasks(xl):
    with pytest.raises(ValueError, match="does not support"):
        xl.generate(req(task="extract", source=SourceAudio(waveform=tone(6.0)), track_name="vocals"))


def test_a_loud_repaint_window_does_not_rescale_the_kept_source(xl, monkeypatch):
    """Anti-clipping applies to the decoded audio before the splice: the source outside the
    window stays bit-exact even when the generated window peaks above full scale."""
    import cantata.pipeline.pipeline as pipeline_mod

    decode = pipeline_mod.decode_latents
    monkeypatch.setattr(pipeline_mod, "decode_latents", lambda vae, lat, **kw: 3.0 * decode(vae, lat, **kw))
    audio = tone(3.0)
    out = xl.generate(req(task="repaint", source=SourceAudio(waveform=audio), repaint_start=1.0, repaint_end=2.0,
                          repaint_mode="conservative")).audio[0]
    fade = int(0.05 * SR)
    assert torch.equal(out[:, : SR - fade], audio[:, : SR - fade])
    assert out.abs().max() <= 1.0
