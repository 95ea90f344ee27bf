"""The 5 Hz LM planner against every key of the LM parity kit (tests/fixtures/parity-lm), on CPU in
float32, through `cantata.planner`: prompts, FSM traces, ten planner runs token for token (greedy
and seeded), logits, codes -> hints through the DiT's quantizer, and the full text-to-music run
with thinking down to the final latents. Plus the loading, batching and merge rules."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from cantata.models.acestep import AceStepDiT
from cantata.models.checkpoint import CheckpointError
from cantata.pipeline import tasks
from cantata.pipeline.latents import pad_with_silence, seeded_noise
from cantata.pipeline.pipeline import CantataPipeline
from cantata.pipeline.request import GenerationRequest, SourceAudio
from cantata.pipeline.sampler import sample
from cantata.planner import (PlanRequest, Planner, SamplingSettings, codes_to_hints, ensure_planner,
                             get_planner_spec, merge_metadata, prompts)
from cantata.planner.decode import left_pad
from cantata.planner.fsm import MetadataFSM
from cantata.planner.hints import quantized_codes
from cantata.planner.tokenizer import AUDIO_CODE_BASE, VALID_CODES
from parity import FIXTURES as DIT_FIXTURES
from parity import LM_KIT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KIT = LM_KIT.folder
CHECKPOINTS = KIT / "checkpoints"
EOS_AND_CODES = [151645] + list(range(AUDIO_CODE_BASE, AUDIO_CODE_BASE + VALID_CODES))


manifest = LM_KIT.manifest
reference = LM_KIT.outputs
kit_inputs = LM_KIT.inputs


GENERATE_CASES = [c for c, m in manifest.items() if m["kind"] == "lm_generate"]
FSM_CASES = [c for c, m in manifest.items() if m["kind"] == "fsm"]


assert_kit = LM_KIT.assert_matches


@pytest.fixture(scope="module")
def planner() -> Planner:
    return Planner.from_pretrained(CHECKPOINTS, "0.6B", download=False)


@pytest.fixture(scope="module")
def dit() -> AceStepDiT:
    return AceStepDiT.from_dir(DIT_FIXTURES / "checkpoints" / "acestep-v15-xl-sft", torch.device("cpu"), torch.float32)


def request_for(case: str) -> PlanRequest:
    """A kit case as a planner request; sampled cases carry the kit's seed(s)."""
    m = manifest[case]
    s, user = m["sampling"], m["user_metadata"] or {}
    seeds = m["batch_seeds"] or ([m["seed"]] if s["temperature"] > 0 else None)
    return PlanRequest(
        caption=m["caption"], lyrics=m["lyrics"], bpm=user.get("bpm"), keyscale=user.get("keyscale"),
        timesignature=user.get("timesignature"), duration=m["target_duration"], thinking=m["thinking"],
        use_cot_metas=m["use_cot_metas"], use_cot_caption=m["use_cot_caption"],
        use_cot_language=m["use_cot_language"],
        sampling=SamplingSettings(s["temperature"], s["cfg_scale"], s["top_k"], s["top_p"], s["repetition_penalty"]),
        negative_prompt=s["negative_prompt"], seeds=seeds)


def allowed_small(rows: list[list[int]]) -> np.ndarray:
    out = np.full((len(rows), 64), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def trace_outputs(case: str, phase: str, trace) -> dict[str, np.ndarray]:
    return {
        f"{case}/{phase}_token_ids": np.array(trace.tokens),
        f"{case}/{phase}_n_allowed": np.array(trace.n_allowed),
        f"{case}/{phase}_allowed_small": allowed_small(trace.allowed_small),
        f"{case}/{phase}_final_hidden": torch.stack(trace.final_hidden).numpy(),
    }


# -- prompts --------------------------------------------------------------------------------------


def test_prompt_strings_and_ids(planner):
    m = manifest["lm/prompts"]
    caption, lyrics, negative = m["caption"], m["lyrics"], m["negative_prompt"]
    cot_text = prompts.cot_block(m["cot_metadata_example"])
    assert cot_text == m["cot_text_example"]
    user_only = PlanRequest("", bpm=70, keyscale="C minor", timesignature="3", duration=5).user_metadata()
    assert prompts.cot_block(user_only) == m["cot_text_user_metas_only"]
    inst = manifest["lm/inst_all_metas_greedy"]
    built = {
        "cot": prompts.cot_prompt(caption, lyrics),
        "cot_uncond": prompts.cot_unconditional_prompt(lyrics, None),
        "cot_uncond_negative": prompts.cot_unconditional_prompt(lyrics, negative),
        "codes": prompts.codes_prompt(caption, lyrics, cot_text),
        "codes_user_metas_only": prompts.codes_prompt(inst["caption"], inst["lyrics"], m["cot_text_user_metas_only"]),
        "codes_uncond": prompts.codes_unconditional_prompt("NO USER INPUT"),
        "codes_uncond_negative": prompts.codes_unconditional_prompt(negative),
        "understand": prompts.understand_prompt(m["understand_codes"]),
        "inspiration": prompts.inspiration_prompt(m["inspiration_query"], False),
        "inspiration_instrumental": prompts.inspiration_prompt(m["inspiration_query"], True),
        "format": prompts.format_prompt(m["format_caption"], m["format_lyrics"]),
    }
    assert built == m["prompts"]
    tok = planner.tokenizer
    for name, text in built.items():
        assert_kit(f"lm/prompts/{name}_ids", tok.encode(text))
    ids, mask = left_pad([tok.encode(built["codes"]), tok.encode(built["codes_uncond"])], tok.pad_id)
    assert_kit("lm/prompts/codes_cfg_pair_ids", ids)
    assert_kit("lm/prompts/codes_cfg_pair_attention_mask", mask)
    assert len(tok) == m["tokenizer"]["len"] and tok.eos_id == 151645 and tok.pad_id == 151643
    assert {t: tok.token_id(t) for t in m["special_token_ids"]} == m["special_token_ids"]


# -- the state machine, teacher-forced --------------------------------------------------------------


@pytest.mark.parametrize("case", FSM_CASES)
def test_fsm_trace(case, planner):
    """Scores 0 except +10 on the intended token, as the kit drove the official processor."""
    m = manifest[case]
    tokens = reference[f"{case}/token_ids"]
    if m["phase"] == "codes":
        prompt = planner.tokenizer.encode(manifest["lm/prompts"]["prompts"]["codes"])
        fsm = MetadataFSM.for_codes(planner.tables, prompt, m["target_duration"])
    else:
        fsm = MetadataFSM(planner.tables, user=m["user_metadata"] or {}, skip_caption=m["skip_caption"],
                          skip_language=m["skip_language"], stop_at_reasoning=m["stop_at_reasoning"])
    n_allowed, small, states, states_after = [], [], [], []
    for token in tokens.tolist():
        scores = torch.zeros(len(planner.tokenizer))
        scores[token] = 10.0
        states.append(fsm.state.name)
        allowed = torch.isfinite(fsm.constrain(scores))
        states_after.append(fsm.state.name)  # the kit's "states_after": after the processor call
        n_allowed.append(int(allowed.sum()))
        small.append(torch.nonzero(allowed).flatten().tolist() if n_allowed[-1] <= 64 else [])
        fsm.advance(token)
    assert states == m["states"] and states_after == m["states_after"]
    assert_kit(f"{case}/token_ids", tokens)
    assert_kit(f"{case}/n_allowed", n_allowed)
    assert_kit(f"{case}/allowed_small", allowed_small(small))


# -- planner runs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(planner, dit):
    """Every generation case planned through `Planner.plan`, as kit-keyed outputs."""
    results, plans = {}, {}
    for case in GENERATE_CASES:
        keep = manifest[case].get("first_caption_step", 0) + 1
        plan = planner.plan([request_for(case)], keep_logits_steps=keep)[0]
        plans[case] = plan
        for phase, trace in plan.traces.items():
            results.update(trace_outputs(case, phase, trace))
        for k, codes in enumerate(plan.codes):
            suffix = str(k) if len(plan.codes) > 1 else ""
            if codes:
                results[f"{case}/audio_codes{suffix}"] = np.array(codes)
                results[f"{case}/fsq_5hz{suffix}"] = quantized_codes(dit, codes).numpy()
                results[f"{case}/lm_hints_25hz{suffix}"] = codes_to_hints(dit, codes).numpy()
        if "first_caption_step" in manifest[case]:
            cot, codes = plan.traces["cot"], plan.traces["codes"]
            results[f"{case}/cot_logits_step0"] = cot.logits[0].numpy()
            results[f"{case}/cot_logits_first_caption_step"] = cot.logits[manifest[case]["first_caption_step"]].numpy()
            results[f"{case}/codes_logits_step0_eos_and_codes"] = codes.logits[0][:, EOS_AND_CODES].numpy()
            results[f"{case}/codes_cfg_logits_step0_eos_and_codes"] = codes.guided_logits[0][None, EOS_AND_CODES].numpy()
            results[f"{case}/codes_sampling_kept_step0_eos_and_codes"] = codes.kept[0][None, EOS_AND_CODES].numpy()
    return results, plans


@pytest.mark.parametrize("case", GENERATE_CASES)
def test_planner_case(case, runs, planner):
    """Token ids, allowed sets, hidden states, codes and hints of every phase; parsed metadata,
    output text, FSM states and the phase inputs as the kit recorded them."""
    results, plans = runs
    m, plan = manifest[case], plans[case]
    keys = [k for k in reference if k.startswith(case + "/")]
    assert sorted(k for k in results if k.startswith(case + "/")) == sorted(keys)
    for key in keys:
        assert_kit(key, results[key])
    assert plan.metadata == m["metadata"]
    assert [len(c) for c in plan.codes] == m["audio_code_counts"]
    phases = dict(zip(plan.traces, m["phases"]))
    tok, inputs = planner.tokenizer, kit_inputs
    for name, phase in phases.items():
        trace = plan.traces[name]
        assert tok.decode(trace.tokens) == phase["output_text"]
        assert trace.states == phase["fsm_states"]
        assert len(trace.tokens) == phase["n_generated"]
        if phase["cfg"]:
            ids, mask = left_pad([tok.encode(phase["prompt"]),
                                  tok.encode(m["unconditional_prompts"][int(name[5:] or 0)])], tok.pad_id)
            assert np.array_equal(ids.numpy(), inputs[f"{case}/{name}_input_ids"])
            assert np.array_equal(mask.numpy(), inputs[f"{case}/{name}_attention_mask"])
        else:
            assert tok.encode(phase["prompt"]) == inputs[f"{case}/{name}_input_ids"][0].tolist()


def test_requests_planned_in_one_batch_match_their_solo_runs(planner):
    """Three requests of different lengths and modes (greedy, seeded, metas given) in one call:
    left padding with pad-inclusive positions is mathematically the solo run; the kit's tokens hold."""
    cases = ["lm/en_greedy", "lm/zh_user_metas_s13", "lm/inst_all_metas_greedy"]
    plans = planner.plan([request_for(c) for c in cases])
    for case, plan in zip(cases, plans):
        for phase, trace in plan.traces.items():
            assert trace.tokens == reference[f"{case}/{phase}_token_ids"].tolist(), (case, phase)
        assert plan.metadata == manifest[case]["metadata"]


# -- the full text-to-music case ------------------------------------------------------------------


def test_text2music_with_thinking_down_to_the_final_latents(planner, parity_root):
    """Planner (seed 1234, defaults) -> official merge (LM caption, user duration and language) ->
    codes -> hints -> the DiT as a cover whose source half of the context is the hints -> 10 steps.

    The pipeline has no hints entry yet: the cover plan is prepared from the hints as source
    latents and its context is then set to the hints themselves (not re-quantized), which is
    what the official handler does with `precomputed_lm_hints_25Hz`."""
    case = "xl-sft/lm_t2m"
    m = manifest[case]
    s = m["lm_sampling"]
    request = PlanRequest(m["caption"], m["lyrics"], duration=m["duration_s"], seeds=[m["seed"]],
                          sampling=SamplingSettings(s["temperature"], s["cfg_scale"], s["top_k"], s["top_p"]),
                          negative_prompt=s["negative_prompt"])
    plan = planner.plan([request])[0]
    assert plan.metadata == m["lm_metadata"]
    codes = plan.codes[0]
    assert_kit(f"{case}/audio_codes", codes)
    merged = merge_metadata(request, plan.metadata, m["vocal_language"], rewrite_caption=True)
    assert merged.caption == m["dit_call"]["captions"] and merged.bpm == m["dit_call"]["bpm"]
    assert merged.keyscale is None and merged.timesignature is None and merged.language == "en"

    pipe = CantataPipeline.from_pretrained(parity_root, "xl-sft", device="cpu", dtype="fp32", download=False)
    hints = codes_to_hints(pipe.dit, codes)
    assert_kit(f"{case}/lm_hints_25hz", hints)
    dit_request = GenerationRequest(
        caption=merged.caption, lyrics=m["lyrics"], language=merged.language, duration=merged.duration,
        bpm=merged.bpm, keyscale=merged.keyscale, timesignature=merged.timesignature, seeds=[m["seed"]],
        steps=m["infer_steps"], shift=m["shift"], guidance_scale=m["guidance_scale"],
        cfg_interval=tuple(m["cfg_interval"]), dcw=m["dcw"]["dcw_enabled"], task="cover",
        source=SourceAudio(latents=hints[0]), cover_strength=m["audio_cover_strength"])
    prep = pipe.prepare(dit_request)
    source = pad_with_silence(hints, prep.frames, pipe.dit.silence_latent)
    phase = dataclasses.replace(prep.plan.phases[0], context=tasks.context(source))
    plan_dit = dataclasses.replace(prep.plan, phases=[phase])
    assert_kit(f"{case}/encoder_hidden_states", phase.cond)
    assert_kit(f"{case}/context_latents", phase.context)
    noise = seeded_noise(prep.seeds, prep.frames, 64, pipe.device, pipe.dtype)
    assert torch.equal(noise, torch.from_numpy(kit_inputs[f"{case}/noise"]))
    assert_kit(f"{case}/target_latents", sample(pipe.dit.transformer, noise, noise, plan_dit))


def test_every_kit_key_is_checked(runs):
    """The keys above: prompts (13), FSM traces (12), the ten planner runs, and the full case (5)."""
    results, _ = runs
    prompt_keys = {k for k in reference if k.startswith("lm/prompts/")}
    fsm_keys = {f"{c}/{n}" for c in FSM_CASES for n in ("token_ids", "n_allowed", "allowed_small")}
    full_keys = {k for k in reference if k.startswith("xl-sft/lm_t2m/")}
    assert len(prompt_keys) == 13 and len(full_keys) == 5
    assert set(results) | prompt_keys | fsm_keys | full_keys == set(reference)
    assert len(reference) == 137


# -- loading, defaults, merge -------------------------------------------------------------------------


def test_missing_planner_offline_names_files_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    shutil.copytree(CHECKPOINTS / "acestep-5Hz-lm-0.6B", tmp_path / "acestep-5Hz-lm-0.6B")
    (tmp_path / "acestep-5Hz-lm-0.6B" / "model.safetensors").unlink()
    assert ensure_planner(CHECKPOINTS, get_planner_spec("0.6b")) == CHECKPOINTS / "acestep-5Hz-lm-0.6B"
    with pytest.raises(CheckpointError) as err:
        ensure_planner(tmp_path, get_planner_spec("0.6B"))
    assert "acestep-5Hz-lm-0.6B/model.safetensors (or shards + index)" in str(err.value)
    assert "huggingface-cli download ACE-Step/acestep-5Hz-lm-0.6B" in str(err.value)
    with pytest.raises(CheckpointError) as err:
        ensure_planner(tmp_path, get_planner_spec("1.7B"))
    assert "huggingface-cli download ACE-Step/Ace-Step1.5 --include 'acestep-5Hz-lm-1.7B/*'" in str(err.value)
    with pytest.raises(ValueError, match="unknown planner '3B'"):
        get_planner_spec("3B")


def test_user_values_always_win_and_caption_rewrite_is_a_switch():
    request = PlanRequest("my caption", bpm=100, duration=30.0)
    planned = {"bpm": 88, "caption": "the planner's", "duration": 6, "keyscale": "D♯ minor", "language": "fr",
               "timesignature": "4"}
    merged = merge_metadata(request, planned, None)
    assert (merged.caption, merged.bpm, merged.duration, merged.keyscale, merged.timesignature) == (
        "my caption", 100, 30.0, "D♯ minor", 4)
    assert merged.language is None  # official: the planner's language never reaches the DiT
    assert merge_metadata(request, planned, None, planned_language=True).language == "fr"
    assert merge_metadata(request, planned, "en", planned_language=True).language == "en"
    assert merge_metadata(request, planned, None, rewrite_caption=True).caption == "the planner's"
    assert merge_metadata(request, {"caption": "x"}, None).bpm == 100


def test_all_four_metas_skip_the_metadata_phase(planner):
    plan = planner.plan([request_for("lm/inst_all_metas_greedy")])[0]
    assert plan.cot_text is None and "cot" not in plan.traces
    assert plan.metadata == {"bpm": 70, "keyscale": "C minor", "timesignature": "3", "duration": 5}
