"""The 5 Hz LM planner in the product: the planning stage before the DiT (metadata completed only
where missing, codes -> semantic hints -> the DiT), the kit's full thinking case through the
pipeline's hints entry, the request fields in the validator's table, the job mapping, and
`cantata serve --demo` (which ships a tiny planner) end to end over HTTP and WebSocket; a server
without a planner refuses `thinking`."""

from __future__ import annotations

import dataclasses
import json
import os

import httpx
import pytest
import torch
from websockets.sync.client import connect

from cantata.api.errors import RunwareError
from cantata.api.validation import FIELD, validate_audio_inference
from cantata.jobs.mapping import base_seed, batch_key, generation_request
from cantata.pipeline.pipeline import CantataPipeline
from cantata.pipeline.request import GenerationRequest, SourceAudio
from cantata.pipeline.thinking import PlannerUnavailable, plan_requests
from cantata.planner import PlanRequest, Planner, SamplingSettings, codes_to_hints, served_planner
from parity import LM_KIT
from serverkit import REPO, XL_SFT, ServerProcess, free_port, new_uuid, wait_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PLANNER_FIELDS = ("thinking", "planner", "plannerTemperature", "plannerCFGScale", "plannerTopK", "plannerTopP",
                  "rewriteCaption")


@pytest.fixture(scope="module")
def root(planner_root):
    return planner_root


@pytest.fixture(scope="module")
def pipe(root) -> CantataPipeline:
    return CantataPipeline.from_pretrained(root, "xl-sft", device="cpu", dtype="fp32", download=False, planner="1.7B")


def t2m(**kw) -> GenerationRequest:
    return GenerationRequest(**{"caption": "lo-fi hip hop, mellow Rhodes", "duration": 10.0, "seeds": [7],
                                "steps": 2, **kw})


# -- the tiny planner and the auto setting ------------------------------------------------------------


def test_tiny_planner_has_the_real_vocabulary_and_tokenizer(root):
    from cantata.planner.tokenizer import PlannerTokenizer

    ours = PlannerTokenizer.from_dir(root / "acestep-5Hz-lm-1.7B")
    kit = PlannerTokenizer.from_dir(REPO / "tests/fixtures/parity-lm/checkpoints/acestep-5Hz-lm-0.6B")
    text = "<|im_start|>user\n# Caption\n漢字 ünï lo-fi<|im_end|>\n<think>\nbpm: 84\n</think><|audio_code_63999|>"
    assert len(ours) == len(kit) == 217_204
    assert ours.encode(text) == kit.encode(text)


def test_auto_serves_a_complete_planner_found_and_none_serves_none(root, tmp_path):
    assert served_planner(root, "auto") == "1.7B"
    assert served_planner(tmp_path, "auto") is None  # auto never downloads
    assert served_planner(root, "none") is None and served_planner(tmp_path, "4b") == "4B"
    with pytest.raises(ValueError, match="unknown planner"):
        served_planner(root, "3B")


# -- the planning stage -------------------------------------------------------------------------------


def test_metadata_is_completed_only_where_missing(pipe):
    request = t2m(bpm=96, seeds=[7, 8])
    [planned_request], [planned] = plan_requests(pipe.planner, pipe.dit, [request])
    assert planned_request.bpm == 96 and planned.bpm == 96  # the user's value wins
    assert planned_request.duration == 10.0 and planned.duration == 10.0
    assert planned_request.keyscale and planned_request.keyscale == planned.keyscale
    assert planned_request.timesignature in (2, 3, 4, 6) and planned_request.timesignature == planned.timesignature
    assert planned_request.caption == request.caption and planned.caption is None  # rewrite is off
    assert planned_request.semantic_hints is None and planned.codes == 0  # no thinking, no codes
    # The planner was asked exactly that: its own run gives the same metadata.
    ask = PlanRequest(request.caption, bpm=96, duration=10.0, thinking=False, use_cot_caption=False, seeds=[7, 8])
    assert pipe.planner.plan([ask])[0].metadata["keyscale"] == planned.keyscale


def test_complete_metadata_without_thinking_is_not_planned(pipe):
    request = t2m(bpm=90, keyscale="C major", timesignature=4)
    out, planned = plan_requests(pipe.planner, pipe.dit, [request])
    assert out[0] is request and planned == [None]
    assert plan_requests(pipe.planner, pipe.dit, [t2m(task="cover", source=SourceAudio(latents=torch.zeros(5, 64)))]
                         )[1] == [None]  # only text-to-music is planned


def test_thinking_codes_become_the_requests_semantic_hints(pipe):
    request = t2m(bpm=90, keyscale="C major", timesignature=4, thinking=True, seeds=[7, 8])
    [planned_request], [planned] = plan_requests(pipe.planner, pipe.dit, [request])
    ask = PlanRequest(request.caption, bpm=90, keyscale="C major", timesignature=4, duration=10.0,
                      use_cot_caption=False, seeds=[7, 8])
    plan = pipe.planner.plan([ask])[0]
    assert plan.cot_text is None and [len(c) for c in plan.codes] == [50, 50]  # int(5 * 10 s) codes each
    expected = torch.cat([codes_to_hints(pipe.dit, codes) for codes in plan.codes])
    assert torch.equal(planned_request.semantic_hints, expected)
    assert planned.codes == 50 and (planned.bpm, planned.keyscale, planned.timesignature) == (90, "C major", 4)
    # The DiT renders over the hints: a cover phase whose source half is the hints, padded with silence.
    prep = pipe.prepare(planned_request)
    [phase] = prep.plan.phases
    assert torch.equal(phase.context[:, :250, :64], expected) and prep.samples == 480_000
    assert pipe.batch_key(request) is None and pipe.batch_key(planned_request) is None


def test_generate_returns_the_planned_metadata_and_random_seeds_are_fixed_first(pipe):
    result = pipe.generate(t2m(seeds=None, batch_size=2, thinking=True))
    assert len(result.seeds) == 2 and result.audio.shape == (2, 2, 480_000)
    assert result.planned.codes == 50 and result.planned.bpm is not None and result.planned.keyscale
    again = pipe.generate(t2m(seeds=result.seeds, thinking=True))
    assert again.planned == result.planned  # one seed reproduces the plan too


def test_without_a_planner_thinking_is_refused_and_the_rest_runs_as_before(pipe):
    with pytest.raises(PlannerUnavailable) as err:
        plan_requests(None, pipe.dit, [t2m(thinking=True)])
    assert err.value.code == "unsupportedThinking" and err.value.parameter == "settings.thinking"
    request = t2m()
    assert plan_requests(None, pipe.dit, [request]) == ([request], [None])


def test_the_full_kit_case_through_the_pipelines_hints_entry(parity_root):
    """The kit's thinking text2music run again, but the hints go in as `semantic_hints` of a
    text-to-music request: the context and the final latents match the official ones."""
    from cantata.pipeline.latents import seeded_noise
    from cantata.pipeline.sampler import sample
    from cantata.planner import merge_metadata

    case = "xl-sft/lm_t2m"
    m = LM_KIT.manifest[case]
    s = m["lm_sampling"]
    planner = Planner.from_pretrained(LM_KIT.folder / "checkpoints", "0.6B", download=False)
    request = PlanRequest(m["caption"], m["lyrics"], duration=m["duration_s"], seeds=[m["seed"]],
                          sampling=SamplingSettings(s["temperature"], s["cfg_scale"], s["top_k"], s["top_p"]),
                          negative_prompt=s["negative_prompt"])
    plan = planner.plan([request])[0]
    merged = merge_metadata(request, plan.metadata, m["vocal_language"], rewrite_caption=True)
    pipe = CantataPipeline.from_pretrained(parity_root, "xl-sft", device="cpu", dtype="fp32", download=False)
    hints = codes_to_hints(pipe.dit, plan.codes[0])
    prep = pipe.prepare(GenerationRequest(
        caption=merged.caption, lyrics=m["lyrics"], language=merged.language, duration=merged.duration,
        bpm=merged.bpm, keyscale=merged.keyscale, timesignature=merged.timesignature, seeds=[m["seed"]],
        steps=m["infer_steps"], shift=m["shift"], guidance_scale=m["guidance_scale"],
        cfg_interval=tuple(m["cfg_interval"]), dcw=m["dcw"]["dcw_enabled"], semantic_hints=hints[0]))
    [phase] = prep.plan.phases
    LM_KIT.assert_matches(f"{case}/encoder_hidden_states", phase.cond)
    LM_KIT.assert_matches(f"{case}/context_latents", phase.context)
    noise = seeded_noise(prep.seeds, prep.frames, 64, pipe.device, pipe.dtype)
    assert torch.equal(noise, torch.from_numpy(LM_KIT.inputs[f"{case}/noise"]))
    LM_KIT.assert_matches(f"{case}/target_latents", sample(pipe.dit.transformer, noise, noise, prep.plan))


# -- the request surface ------------------------------------------------------------------------------


def task(**settings) -> dict:
    return {"taskType": "audioInference", "taskUUID": new_uuid(), "model": XL_SFT, "positivePrompt": "lo-fi",
            "duration": 30, "settings": settings}


def test_planner_fields_are_documented_extensions_of_the_table():
    for key in PLANNER_FIELDS:
        spec = FIELD[f"settings.{key}"]
        assert spec.extension and spec.description
    assert FIELD["settings.rewriteCaption"].default is False and FIELD["settings.thinking"].default is False
    assert FIELD["settings.plannerTemperature"].default == SamplingSettings().temperature
    assert FIELD["settings.plannerTopP"].default == SamplingSettings().top_p


def test_validated_planner_fields_reach_the_pipeline_request():
    validated = validate_audio_inference(
        task(thinking=True, planner="1.7b", plannerTemperature=0, plannerCFGScale=1.5, plannerTopK=40,
             plannerTopP=1, rewriteCaption=True), planner="1.7B")
    s = validated.settings
    assert (s.thinking, s.planner, s.rewrite_caption) == (True, "1.7B", True)
    validated = dataclasses.replace(validated, seed=base_seed(validated))
    request = generation_request(validated)
    assert request.thinking and request.rewrite_caption
    assert request.planner_sampling == SamplingSettings(temperature=0.0, cfg_scale=1.5, top_k=40, top_p=1.0)
    assert batch_key(validated) is None  # each thinking task renders over its own codes
    defaults = generation_request(dataclasses.replace(validate_audio_inference(task(), planner="1.7B"), seed=1))
    assert not defaults.thinking and not defaults.rewrite_caption and defaults.planner_sampling == SamplingSettings()


@pytest.mark.parametrize("settings, planner, code, parameter", [
    ({"thinking": True}, None, "unsupportedThinking", "settings.thinking"),
    ({"rewriteCaption": False}, None, "unsupportedPlanner", "settings.rewriteCaption"),
    ({"planner": "4B"}, "1.7B", "unsupportedPlanner", "settings.planner"),
    ({"plannerTopK": -1}, "1.7B", "invalidPlannerTopK", "settings.plannerTopK"),
    ({"thinking": 1}, "1.7B", "invalidThinking", "settings.thinking"),
])
def test_planner_fields_are_refused_with_runware_errors(settings, planner, code, parameter):
    with pytest.raises(RunwareError) as err:
        validate_audio_inference(task(**settings), planner=planner)
    assert (err.value.code, err.value.parameter) == (code, parameter)
    assert err.value.to_dict()["documentation"]


def test_thinking_with_a_source_track_conflicts():
    body = {**task(thinking=True), "inputs": {"audio": new_uuid()}}
    del body["duration"]
    with pytest.raises(RunwareError) as err:
        validate_audio_inference(body, planner="1.7B")
    assert err.value.code == "conflictingParameters"


# -- stored with each result --------------------------------------------------------------------------


def test_a_version_1_database_gains_the_planned_column_and_results_keep_their_plan(tmp_path):
    import sqlite3

    from cantata.jobs.store import RUNNING, SCHEMA_VERSION, SUCCESS, VERSION_1_SCHEMA, NewResult, Store

    path = tmp_path / "cantata.db"
    with sqlite3.connect(path) as conn:  # what a version-1 Cantata wrote
        conn.executescript(VERSION_1_SCHEMA)
    store = Store(path)
    uuid = new_uuid()
    store.insert_task(uuid=uuid, key_id="alice", model="xl-sft", task_json="{}", request_json="{}", inputs={},
                      now=1.0)
    assert store.mark_running(uuid, 2.0)
    plan = {"bpm": 120, "keyscale": "C major", "timesignature": 4, "duration": 30.0, "language": "en",
            "caption": None, "codes": 150}
    results = [NewResult(idx=i, audio_uuid=new_uuid(), seed=i, storage_key=f"k{i}", ext=".wav", mime="audio/wav",
                         size=1, gpu_seconds=0.1, expires_at=99.0, planned=plan if i == 0 else None) for i in range(2)]
    assert store.finish(uuid, SUCCESS, now=3.0, expires_at=99.0, results=results, from_statuses=(RUNNING,))
    assert [r.planned for r in store.results(uuid)] == [plan, None]
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)


def test_plannedmetadata_on_the_wire():
    from cantata.api.responses import planned_metadata

    stored = {"bpm": 120, "keyscale": "C major", "timesignature": 4, "duration": 30.0, "language": None,
              "caption": "rewritten", "codes": 0}
    assert planned_metadata(stored) == {"bpm": 120, "keyScale": "C major", "timeSignature": 4, "duration": 30.0,
                                        "caption": "rewritten", "audioCodes": 0}


def test_cli_generate_thinks_with_the_demo_planner(tmp_path):
    from serverkit import cantata_cli

    out = tmp_path / "song.wav"
    done = cantata_cli("generate", "lo-fi hip hop", "--demo", "--duration", "10", "--steps", "2", "--seed", "5",
                       "--think", "--device", "cpu", "-o", str(out), env={"HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:4] == b"RIFF" and "codes=50" in done.stdout and "duration=10.0" in done.stdout
    refused = cantata_cli("generate", "lo-fi", "--demo", "--think", "--planner", "none", "-o", str(out),
                          env={"HOME": str(tmp_path / "home")})
    assert refused.returncode != 0 and "--think needs the 5 Hz LM planner" in refused.stderr


# -- `cantata serve --demo` end to end ----------------------------------------------------------------


def demo_server(tmp_path, *extra: str) -> ServerProcess:
    """`cantata serve --demo` exactly as a user runs it: the demo checkpoints (DiT and planner)
    are written under $HOME/.cache on first use; HOME is the test's own directory."""
    server = ServerProcess(tmp_path, tmp_path / "data", free_port(), "--demo", *extra,
                           env={"HOME": str(tmp_path / "home")})
    i = server.args.index("--checkpoints")
    del server.args[i:i + 2]
    return server.start(timeout=300)


def thinking_task(**extra) -> dict:
    """Missing bpm, key and time signature, and `thinking`: the planner plans all of it."""
    return {"taskType": "audioInference", "taskUUID": new_uuid(), "model": XL_SFT, "duration": 30, "steps": 2,
            "positivePrompt": "uk garage, choir, 2-step drums", "seed": 11, "outputFormat": "WAV",
            "settings": {"thinking": True, "lyrics": "[Verse]\nCity lights are fading slow"}, **extra}


def assert_planned(item: dict, task_uuid: str) -> None:
    assert item["status"] == "success" and item["taskUUID"] == task_uuid and item["seed"] == 11
    planned = item["plannedMetadata"]
    assert planned["duration"] == 30 and planned["audioCodes"] == 150  # int(5 * 30 s) codes
    assert 30 <= planned["bpm"] <= 300 and planned["timeSignature"] in (2, 3, 4, 6)
    assert planned["keyScale"].split(" ")[1] in ("major", "minor") and "caption" not in planned


def next_items(ws) -> list[dict]:
    message = json.loads(ws.recv(timeout=30))
    assert "errors" not in message, message
    return message["data"]


def test_demo_server_plans_over_http_and_websocket(tmp_path):
    server = demo_server(tmp_path)
    try:
        ready = httpx.get(server.url + "/ready", timeout=10).json()
        assert ready["planner"] == "1.7B" and ready["ready"]
        search = {"taskType": "modelSearch", "taskUUID": new_uuid(), "category": "planner"}
        [found] = server.post([search]).json()["data"]
        assert [(m["air"], m["version"]) for m in found["results"]] == [("cantata:ace-step-5hz-lm@1.7B", "1.7B")]
        body = thinking_task()
        reply = server.post([body], timeout=300)
        assert reply.status_code == 200, reply.text
        [item] = reply.json()["data"]
        assert_planned(item, body["taskUUID"])
        audio = httpx.get(item["audioURL"], timeout=30)
        assert audio.status_code == 200 and audio.content[:4] == b"RIFF"

        body = thinking_task(deliveryMethod="async")
        with connect(server.ws_url, open_timeout=30) as ws:
            ws.send(json.dumps([body]))  # without keys the first task opens the session
            assert next_items(ws)[0]["taskType"] == "authentication"
            assert next_items(ws) == [{"taskType": "audioInference", "taskUUID": body["taskUUID"]}]
            poll = {"taskType": "getResponse", "taskUUID": body["taskUUID"]}

            def finished():
                ws.send(json.dumps([poll]))
                items = next_items(ws)
                return items if items[0].get("status") == "success" else None

            [item] = wait_for(finished, 300, "the thinking task over the WebSocket", interval=1)
        assert_planned(item, body["taskUUID"])
        assert item["plannedMetadata"] == reply.json()["data"][0]["plannedMetadata"]  # same seed, same plan
    finally:
        server.stop()


def test_demo_server_without_a_planner_refuses_thinking(tmp_path):
    server = demo_server(tmp_path, "--planner", "none")
    try:
        assert httpx.get(server.url + "/ready", timeout=10).json()["planner"] is None
        [found] = server.post([{"taskType": "modelSearch", "taskUUID": new_uuid()}]).json()["data"]
        assert {m["category"] for m in found["results"]} == {"checkpoint"}
        body = thinking_task()
        reply = server.post([body], timeout=60)
        assert reply.status_code == 400, reply.text
        [error] = reply.json()["errors"]
        assert error["code"] == "unsupportedThinking" and error["parameter"] == "settings.thinking"
        assert error["taskUUID"] == body["taskUUID"] and "planner" in error["message"]
        plain = {**body, "taskUUID": new_uuid(), "settings": {}}
        [item] = server.post([plain], timeout=300).json()["data"]
        assert item["status"] == "success" and "plannedMetadata" not in item  # works as before
    finally:
        server.stop()
