"""Schedule, guidance, prompt formatting and sampler behaviour beyond the parity cases."""

from __future__ import annotations

import pytest
import torch

from cantata.models.variants import VARIANTS, sampling_params
from cantata.pipeline import prompts
from cantata.pipeline.guidance import APG, CFG, make_guidance
from cantata.pipeline.latents import duration_frames, seeded_noise
from cantata.pipeline.pipeline import CantataPipeline
from cantata.pipeline.request import GenerationCancelled, GenerationFailed, GenerationRequest
from cantata.pipeline.sampler import sample
from cantata.pipeline.schedule import sft_schedule, turbo_schedule

# -- schedule -----------------------------------------------------------------------------------


def test_sft_schedule_shape_and_formula():
    t = sft_schedule(50, 3.0, torch.float32)
    assert t.shape == (51,) and t[0] == 1.0 and t[-1] == 0.0
    u = torch.linspace(1, 0, 51, dtype=torch.float64)
    assert torch.allclose(t.double(), 3 * u / (1 + 2 * u), atol=1e-6)
    assert torch.all(t[:-1] > t[1:])
    assert torch.equal(sft_schedule(8, 1.0, torch.float32), torch.linspace(1, 0, 9))


def test_sft_schedule_is_built_in_the_model_dtype():
    """bf16 rounding of t is part of what a seed means on GPU (pitfall 5)."""
    bf = sft_schedule(10, 3.0, torch.bfloat16)
    assert bf.dtype == torch.bfloat16
    assert not torch.equal(bf.float(), sft_schedule(10, 3.0, torch.float32))


def test_turbo_tables():
    expected = {1.0: [1.0, .875, .75, .625, .5, .375, .25, .125, 0.0],
                2.0: [1.0, .93333, .85714, .76923, .66667, .54545, .4, .22222, 0.0],
                3.0: [1.0, .95455, .9, .83333, .75, .64286, .5, .3, 0.0]}
    for shift, table in expected.items():
        assert torch.allclose(turbo_schedule(8, shift, torch.float32), torch.tensor(table), atol=1e-5)
    assert torch.equal(turbo_schedule(8, 2.4, torch.float32), turbo_schedule(8, 2.0, torch.float32))
    with pytest.raises(ValueError):
        turbo_schedule(21, 3.0, torch.float32)


# -- guidance -----------------------------------------------------------------------------------


def test_cfg_is_plain_classifier_free_guidance():
    c, u = torch.randn(2, 10, 4), torch.randn(2, 10, 4)
    assert torch.allclose(CFG(5.0)(c, u), u + 5.0 * (c - u))


def test_apg_update_is_orthogonal_to_cond_along_time():
    torch.manual_seed(0)
    c, u = torch.randn(2, 50, 4), torch.randn(2, 50, 4) * 0.01 + 0.3
    out = APG(3.0)(c, u)
    update = (out - c) / 2.0
    assert torch.allclose((update * c).sum(dim=1), torch.zeros(2, 4), atol=1e-5)
    # The clipped direction never exceeds the norm threshold along time.
    assert (update.norm(dim=1) <= 2.5 + 1e-5).all()


def test_apg_momentum_carries_across_calls():
    torch.manual_seed(1)
    c, u = torch.randn(1, 20, 2), torch.randn(1, 20, 2)
    fresh = APG(2.0)
    first = fresh(c, u)
    second = fresh(c, u)  # running average = d + (-0.75)·d = 0.25·d: a different update
    assert torch.allclose(first, APG(2.0)(c, u))
    assert not torch.allclose(first, second)
    assert torch.allclose(APG(2.0)(c, c), c)


def test_make_guidance():
    sft, turbo = VARIANTS["xl-sft"], VARIANTS["turbo"]
    assert make_guidance(sampling_params(sft, guidance_type="apg", guidance_scale=1.0)) is None
    assert make_guidance(sampling_params(turbo, guidance_type="cfg", guidance_scale=7.0)) is None
    assert isinstance(make_guidance(sampling_params(sft, guidance_type="cfg", guidance_scale=15.0)), CFG)
    assert isinstance(make_guidance(sampling_params(sft, guidance_type="apg", guidance_scale=7.0)), APG)
    with pytest.raises(ValueError):
        sampling_params(sft, guidance_type="adg", guidance_scale=7.0)


@pytest.mark.parametrize("name, steps, guidance_type, scale, guided", [
    ("xl-sft", 50, "apg", 7.0, True), ("xl-base", 50, "apg", 7.0, True), ("sft", 50, "apg", 7.0, True),
    ("base", 50, "apg", 7.0, True), ("xl-turbo", 8, "none", None, False), ("turbo", 8, "none", None, False),
])
def test_sampling_defaults_and_the_guidance_decision(name, steps, guidance_type, scale, guided):
    """One owner fills the per-model defaults and decides whether guidance runs."""
    params = sampling_params(VARIANTS[name])
    assert params == (steps, 3.0, guidance_type, scale) and params.guided is guided
    explicit = sampling_params(VARIANTS[name], steps=4, shift=2.0, guidance_type="cfg", guidance_scale=1.0)
    assert explicit.steps == 4 and explicit.shift == 2.0 and not explicit.guided  # scale 1: no guidance
    if guided:
        assert explicit.guidance_type == "cfg" and sampling_params(VARIANTS[name], guidance_scale=1.5).guided
    else:  # models distilled to run without guidance ignore it, whatever is asked
        assert (explicit.guidance_type, explicit.guidance_scale) == ("none", None)


# -- prompts ------------------------------------------------------------------------------------


def test_metas_and_prompts():
    assert prompts.metas_string(None, None, None, 75.9) == (
        "- bpm: N/A\n- timesignature: N/A\n- keyscale: N/A\n- duration: 75 seconds\n")
    cap = prompts.caption_prompt("I:", "lofi", "- bpm: 84\n")
    assert cap == "# Instruction\nI:\n\n# Caption\nlofi\n\n# Metas\n- bpm: 84\n<|endoftext|>\n"
    assert prompts.lyric_prompt("", "unknown") == "# Languages\nunknown\n\n# Lyric\n[Instrumental]<|endoftext|>"


@pytest.mark.parametrize("given,expected", [("f# MINOR", "F# minor"), ("B♭ major", "B♭ major"),
                                            ("Eb  Minor", "Eb minor"), ("", None), (None, None)])
def test_normalize_keyscale(given, expected):
    assert prompts.normalize_keyscale(given) == expected


@pytest.mark.parametrize("bad", ["H major", "C dorian", "C#m", "major"])
def test_normalize_keyscale_rejects(bad):
    with pytest.raises(ValueError):
        prompts.normalize_keyscale(bad)


def test_base_task_instructions():
    assert prompts.instruction_for("extract", "vocals") == "Extract the VOCALS track from the audio:"
    assert prompts.instruction_for("lego", None) == "Generate the track based on the audio context:"
    assert prompts.instruction_for("complete", None, ["drums", "bass"]) == "Complete the input track with DRUMS | BASS:"


def test_duration_frames():
    assert duration_frames(6.0) == 150 and duration_frames(75) == 1875 and duration_frames(300) == 7500


# -- sampler and pipeline behaviour ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe(parity_root) -> CantataPipeline:
    return CantataPipeline.from_pretrained(parity_root, "xl-sft", device="cpu", dtype="fp32", download=False)


def _req(**kw) -> GenerationRequest:
    base = dict(caption="Warm lo-fi hip hop", lyrics="[Verse]\nla la la", duration=6.0, seeds=[7], steps=6)
    base.update(kw)
    return GenerationRequest(**base)


class CountingDiT:
    """Wraps the transformer to record the batch size of every forward."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __call__(self, x, *args, **kwargs):
        self.batches.append(x.shape[0])
        return self.inner(x, *args, **kwargs)


def _run(pipe, req, transformer=None):
    prep = pipe.prepare(req)
    noise = seeded_noise(prep.seeds, prep.frames, 64, pipe.device, pipe.dtype)
    return sample(transformer or pipe.dit.transformer, noise, noise, prep.plan), prep


def test_no_unconditional_pass_outside_the_cfg_interval(pipe):
    counting = CountingDiT(pipe.dit.transformer)
    _, prep = _run(pipe, _req(cfg_interval=(0.0, 0.5)), counting)
    ts = prep.plan.timesteps[:-1]
    assert counting.batches == [2 if t <= 0.5 else 1 for t in ts]
    assert 1 in counting.batches and 2 in counting.batches


def test_negative_prompt_changes_the_output_and_absent_keeps_parity(pipe):
    plain, _ = _run(pipe, _req())
    again, _ = _run(pipe, _req(negative_prompt=None))
    negative, prep = _run(pipe, _req(negative_prompt="muddy low end, harsh clipping"))
    assert torch.equal(plain, again)
    assert (negative - plain).norm() / plain.norm() > 1e-2
    # The unconditional branch is the null vector except where the caption sits.
    uncond, cond = prep.plan.phases[0].uncond[0], prep.plan.phases[0].cond[0]
    null = pipe.dit.null_condition_emb[0, 0]
    is_null = (uncond == null).all(dim=-1)
    lyric_and_timbre = int(pipe.conditioner.tokenize([prompts.lyric_prompt("[Verse]\nla la la", "en")], 2048)[1].sum()) + 1
    assert is_null[:lyric_and_timbre].all()
    assert not is_null[lyric_and_timbre].item()
    assert uncond.shape[-1] == cond.shape[-1]


def test_guidance_type_cfg_differs_from_apg(pipe):
    apg, _ = _run(pipe, _req(guidance_type="apg"))
    cfg, _ = _run(pipe, _req(guidance_type="cfg"))
    assert (apg - cfg).norm() / apg.norm() > 1e-3


def test_batch_items_have_their_own_seeds(pipe):
    both, _ = _run(pipe, _req(seeds=[7, 8]))
    alone, _ = _run(pipe, _req(seeds=[8]))
    assert torch.allclose(both[1], alone[0], atol=1e-4)
    assert not torch.allclose(both[0], both[1])


def test_progress_and_cancellation(pipe):
    seen = []
    pipe.generate(_req(steps=3), on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(GenerationCancelled):
        pipe.generate(_req(steps=3), cancelled=lambda: len(seen) >= 4, on_step=lambda d, t: seen.append(d))
    assert len(seen) == 4  # stopped after one more step


def test_short_duration_is_padded_to_128_frames_and_cropped(pipe):
    result = pipe.generate(_req(duration=3.0, steps=2))
    assert result.latents.shape == (1, 128, 64)
    assert result.audio.shape == (1, 2, 3 * 48000)


def test_random_seeds_are_reported(pipe):
    result = pipe.generate(_req(seeds=None, batch_size=2, steps=2))
    assert len(result.seeds) == 2 and all(0 <= s < 2**32 for s in result.seeds)


def test_nan_and_silent_audio_are_errors(pipe, monkeypatch):
    monkeypatch.setattr("cantata.pipeline.pipeline.decode_latents", lambda vae, lat, **_: torch.full((1, 2, 288000), float("nan")))
    with pytest.raises(GenerationFailed, match="NaN"):
        pipe.generate(_req(steps=1))
    monkeypatch.setattr("cantata.pipeline.pipeline.decode_latents", lambda vae, lat, **_: torch.zeros(1, 2, 288000))
    with pytest.raises(GenerationFailed, match="silent"):
        pipe.generate(_req(steps=1))


def test_task_not_supported_by_variant(pipe):
    with pytest.raises(ValueError, match="does not support"):
        pipe.prepare(_req(task="extract"))


# -- batching requests of different prompts and lengths ------------------------------------------


def test_generate_batch_gives_each_request_its_solo_result(pipe, monkeypatch):
    """Different captions, lyrics, durations and a negative prompt share one DiT batch, and
    every item matches its solo run to fp32 noise (padding is masked, not attended)."""
    reqs = [
        _req(caption="Warm lo-fi hip hop", duration=6.0, seeds=[7]),
        _req(caption="Fast punk rock with shouted vocals and distorted guitars", lyrics="[Chorus]\nhey hey hey ho",
             duration=7.3, seeds=[8, 9]),
        _req(caption="ambient", lyrics="", duration=5.5, seeds=[10], negative_prompt="drums, vocals, loud"),
    ]
    keys = {pipe.batch_key(r) for r in reqs}
    assert len(keys) == 1 and None not in keys
    import cantata.pipeline.sampler as sampler_mod

    batches, forward = [], sampler_mod._forward
    monkeypatch.setattr(sampler_mod, "_forward", lambda tr, x, *a: batches.append(x.shape[0]) or forward(tr, x, *a))
    batched = pipe.generate_batch(reqs)
    monkeypatch.undo()
    assert batches == [8] * 6  # 4 items, cond + uncond, one forward per step
    for req, got in zip(reqs, batched):
        alone = pipe.generate(req)
        assert got.seeds == alone.seeds
        assert got.latents.shape == alone.latents.shape
        assert got.audio.shape == alone.audio.shape
        err = (got.latents - alone.latents).norm() / alone.latents.norm()
        assert err < 1e-5, err


def test_generate_batch_refuses_incompatible_requests(pipe):
    with pytest.raises(ValueError, match="batch"):
        pipe.generate_batch([_req(steps=4), _req(steps=5)])


def test_tiled_decode_gives_the_same_audio_as_one_pass(pipe):
    """The overlap covers the decoder's receptive field, so the window size is only a memory
    choice: official-size windows and one pass give the same samples."""
    from cantata.pipeline.decode import decode_latents

    latents = torch.randn(1, 600, 64)
    whole = decode_latents(pipe.vae, latents)
    for window in (128, 256, 512):
        tiled = decode_latents(pipe.vae, latents, chunk=window)
        assert tiled.shape == whole.shape == (1, 2, 600 * 1920)
        assert (tiled - whole).abs().max() <= 1e-5 * whole.abs().max()
