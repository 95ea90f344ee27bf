"""Every text-to-music, turbo, cover, repaint, condition-encoder and DiT case of the parity kit,
from the same inputs the official code was given, within the kit's tolerances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cantata.models.acestep import AceStepDiT
from cantata.pipeline import prompts
from cantata.pipeline.decode import decode_latents, finish_audio
from cantata.pipeline.latents import seeded_noise, silence
from cantata.pipeline.request import GenerationRequest, SourceAudio
from cantata.pipeline.sampler import sample
from parity import DIT_KIT, VARIANTS

SAMPLE_CASES = [c for c, m in DIT_KIT.manifest.items() if m["kind"] == "sample"]


def _tensor(key: str) -> torch.Tensor:
    return torch.from_numpy(DIT_KIT.inputs[key])


@pytest.mark.parametrize("kit_variant", list(VARIANTS))
def test_condition_case_from_strings(kit_variant, pipelines):
    """Prompt strings -> token ids -> Qwen3 / lyric lookup -> condition encoder, batch of two."""
    case = DIT_KIT.manifest[f"{kit_variant}/cond"]
    items = case["items"]
    metas = [prompts.metas_string(it["bpm"], int(it["ts"]) if it["ts"] else None,
                                  prompts.normalize_keyscale(it["key"]), it["duration"]) for it in items]
    assert metas == case["metas_strings"]
    instruction = prompts.instruction_for("text2music")
    captions = [prompts.caption_prompt(instruction, it["caption"], m) for it, m in zip(items, metas)]
    lyrics = [prompts.lyric_prompt(it["lyrics"], it["language"]) for it in items]
    assert captions == case["caption_prompts"] and lyrics == case["lyric_prompts"]

    c = pipelines(kit_variant).conditioner
    ids, mask = c.tokenize(captions, 256)
    key = f"{kit_variant}/cond"
    assert torch.equal(ids, _tensor(f"{key}/text_token_ids"))
    assert torch.equal(mask.bool(), _tensor(f"{key}/text_attention_mask"))
    lids, lmask = c.tokenize(lyrics, 2048)
    assert torch.equal(lids, _tensor(f"{key}/lyric_token_ids"))

    text, _ = c.caption_states(captions)
    DIT_KIT.assert_matches(f"{key}/text_hidden_states", text)
    lyric, _ = c.lyric_states(lyrics)
    DIT_KIT.assert_matches(f"{key}/lyric_hidden_states", lyric)
    enc = c.condition_encoder
    with torch.no_grad():
        DIT_KIT.assert_matches(f"{key}/lyric_encoder_out", enc.lyric_encoder(lyric, lmask))
        order = torch.arange(2)
        timbre = silence(pipelines(kit_variant).dit.silence_latent, 750).expand(2, -1, -1)
        assert torch.equal(timbre, _tensor(f"{key}/refer_audio_latents"))
        DIT_KIT.assert_matches(f"{key}/timbre_embs", enc.timbre_encoder(timbre, order)[0])
    packed = c.encode(captions, lyrics, timbre, order)
    DIT_KIT.assert_matches(f"{key}/encoder_hidden_states", packed.states)
    DIT_KIT.assert_matches(f"{key}/encoder_attention_mask", packed.mask.bool())


@pytest.mark.parametrize("kit_variant", list(VARIANTS))
def test_dit_forward(kit_variant, pipelines):
    key = f"{kit_variant}/dit"
    t = _tensor(f"{key}/timestep")
    with torch.no_grad():
        v = pipelines(kit_variant).dit.transformer(
            _tensor(f"{key}/hidden_states"), t, t, _tensor(f"{key}/encoder_hidden_states"),
            _tensor(f"{key}/context_latents")).sample
    DIT_KIT.assert_matches(f"{key}/velocity", v)


def test_xl_timbre_needs_the_cls_token(parity_root):
    """Without the XL fix diffusers' timbre encoder is far off the official output."""
    dit = AceStepDiT.from_dir(parity_root / "acestep-v15-xl-sft", torch.device("cpu"), torch.float32)
    enc = dit.condition_encoder.timbre_encoder
    enc.embed_tokens._forward_hooks.clear()
    timbre = _tensor("xl-sft/cond/refer_audio_latents")
    with torch.no_grad():
        plain = enc(timbre, torch.arange(2))[0]
    with pytest.raises(AssertionError):
        DIT_KIT.assert_matches("xl-sft/cond/timbre_embs", plain)


def request_for(case: str) -> GenerationRequest:
    m = DIT_KIT.manifest[case]
    source = None
    if m["task"] in ("cover", "repaint"):
        source = SourceAudio(latents=_tensor(f"{case}/source_latents")[0])
    start, end = m.get("repaint_window_s") or (None, None)
    return GenerationRequest(
        caption=m["caption"], lyrics=m["lyrics"], language=m["vocal_language"], duration=m["duration_s"],
        bpm=m["bpm"], keyscale=m["keyscale"], timesignature=int(m["timesignature"]), seeds=[m["seed"]],
        steps=m["infer_steps"], shift=m["shift"], guidance_scale=m["guidance_scale"],
        cfg_interval=tuple(m["cfg_interval"]), dcw=m["dcw"]["dcw_enabled"], task=m["task"], source=source,
        cover_strength=m["audio_cover_strength"], repaint_start=start, repaint_end=end,
        repaint_mode=(m["repaint_mode"] or ["balanced"])[0],
    )


@pytest.mark.parametrize("case", SAMPLE_CASES)
def test_sampling_case(case, pipelines):
    """Strings and seed in, final latents out; noise and schedule are checked on the way."""
    pipe = pipelines(DIT_KIT.manifest[case]["variant"])
    prep = pipe.prepare(request_for(case))
    DIT_KIT.assert_matches(f"{case}/encoder_hidden_states", prep.plan.phases[0].cond)
    DIT_KIT.assert_matches(f"{case}/context_latents", prep.plan.phases[0].context)
    assert torch.equal(prep.plan.timesteps, _tensor(f"{case}/timesteps"))
    noise = seeded_noise(prep.seeds, prep.frames, 64, pipe.device, pipe.dtype)
    assert torch.equal(noise, _tensor(f"{case}/noise"))
    latents = sample(pipe.dit.transformer, noise, noise, prep.plan)
    DIT_KIT.assert_matches(f"{case}/target_latents", latents)


def test_generate_matches_latents_and_waveform(pipelines):
    """The public `generate` end to end: same final latents and decoded waveforms."""
    case = "xl-sft/t2m_cfg01"
    pipe = pipelines("xl-sft")
    result = pipe.generate(request_for(case))
    assert result.seeds == [1234] and result.sample_rate == 48000
    DIT_KIT.assert_matches(f"{case}/target_latents", result.latents)
    DIT_KIT.assert_matches(f"{case}/waveform_norm_m1db", result.audio)
    raw = finish_audio(decode_latents(pipe.vae, result.latents), normalize_dbfs=None)
    DIT_KIT.assert_matches(f"{case}/waveform", raw)
    assert np.isclose(result.audio.abs().max().item(), 10 ** (-1 / 20), atol=1e-6)


@pytest.mark.parametrize("window", [(4.1, 8.7), (-2.0, 3.0)], ids=["after-the-source", "before-the-source"])
def test_outpainting_metas_keep_the_source_duration(window, pipelines):
    """Official `prepare_batch_data` writes the duration of the source as given into the metas, not
    the outpainted length: a 147-frame (5.88 s) source outpainted to 8.7 s (or by 2 s before its
    start) is still conditioned on "duration: 5 seconds". The reference condition is encoded from
    the kit's own repaint prompt string with that duration; the extended duration must differ."""
    case = DIT_KIT.manifest["xl-sft/repaint"]
    pipe = pipelines("xl-sft")
    req = request_for("xl-sft/repaint")
    req.source = SourceAudio(latents=_tensor("xl-sft/repaint/source_latents")[0, :147])
    req.repaint_start, req.repaint_end = window
    prep = pipe.prepare(req)

    def condition(duration_line: str) -> torch.Tensor:
        caption = case["caption_prompt"].replace("duration: 6 seconds", duration_line)
        timbre = silence(pipe.dit.silence_latent, 750)
        return pipe.conditioner.encode([caption], [case["lyric_prompt"]], timbre, torch.arange(1)).states

    assert torch.equal(prep.plan.phases[0].cond, condition("duration: 5 seconds"))
    padded_seconds = int(prep.samples / 48000)
    assert padded_seconds > 5
    assert not torch.equal(prep.plan.phases[0].cond, condition(f"duration: {padded_seconds} seconds"))
