"""Adapters as a served feature (issue 10 items 2-4): the registry, the `lora` request field,
modelSearch, requests with different adapters in one DiT batch, and `cantata lora add` + requests
naming the adapter against a real `cantata serve --demo` over HTTP and WebSocket.

The adapters are the parity kit's (tests/fixtures/parity-lora/adapters): written by the official
trainers for the tiny XL SFT and 2B turbo shapes, which are the demo checkpoints' shapes too."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cantata.api.errors import RunwareError
from cantata.api.model_search import catalogue_sources, model_search
from cantata.api.validation import validate_audio_inference
from cantata.jobs.mapping import batch_key, generation_request
from cantata.jobs.task import LoraChoice
from cantata.models.adapters import AdapterError
from cantata.models.adapters.registry import AdapterCache, LoraRegistry, adapter_bytes, base_shapes
from cantata.models.variants import get_variant
from cantata.pipeline.pipeline import CantataPipeline
from cantata.pipeline.request import GenerationRequest
from serverkit import XL_SFT, ServerProcess, cantata_cli, fetch_audio, free_port, server_checkpoints

ADAPTERS = Path(__file__).parent / "fixtures" / "parity-lora" / "adapters"
TURBO = "runware:ace-step@v1.5-turbo"


def audio_task(model: str = XL_SFT, **fields) -> dict:
    return {"taskType": "audioInference", "taskUUID": str(uuid.uuid4()), "model": model,
            "positivePrompt": "lo-fi hip hop, dusty drums", "duration": 30, "steps": 2, "seed": 7, **fields}


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_root) -> LoraRegistry:
    """style (LoRA) and voice (LoKr) for XL SFT, turbo2b (LoRA) for the 2B turbo."""
    reg = LoraRegistry(tmp_path_factory.mktemp("loras") / "loras")
    xl, turbo = get_variant("xl-sft"), get_variant("turbo")
    reg.install(ADAPTERS / "xl-sft_lora_a", xl, base_shapes(tiny_root, xl), "style")
    reg.install(ADAPTERS / "xl-sft_lokr" / "lokr_weights.safetensors", xl, base_shapes(tiny_root, xl), "voice")
    reg.install(ADAPTERS / "2b-turbo_lora", turbo, base_shapes(tiny_root, turbo), "turbo2b")
    return reg


# -- the registry ------------------------------------------------------------------------------------

def test_registry_installs_lists_and_finds_by_name_or_air(registry):
    assert [(e.name, e.kind, e.base, e.architecture) for e in registry.entries()] == [
        ("style", "lora", "xl-sft", "ace-step-1.5-xl"), ("turbo2b", "lora", "turbo", "ace-step-1.5"),
        ("voice", "lokr", "xl-sft", "ace-step-1.5-xl")]
    style = registry.find("style")
    assert registry.find("cantata-lora:style@1") == style and style.modules == 32
    assert sorted(p.name for p in style.path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert registry.find("nothing") is None


def test_registry_sees_a_new_adapter_without_a_new_registry(registry, tiny_root, tmp_path):
    reg = LoraRegistry(tmp_path / "loras")
    assert reg.entries() == []
    xl = get_variant("xl-sft")
    reader = LoraRegistry(tmp_path / "loras")  # another process's view: the server's
    assert reader.entries() == []
    reg.install(ADAPTERS / "xl-sft_lora_b", xl, base_shapes(tiny_root, xl))
    assert [e.name for e in reader.entries()] == ["xl-sft_lora_b"]
    with pytest.raises(AdapterError, match="already installed"):
        reg.install(ADAPTERS / "xl-sft_lora_b", xl, base_shapes(tiny_root, xl))
    (tmp_path / "loras" / ".half-copied").mkdir()  # no metadata: never offered
    assert [e.name for e in reader.entries()] == ["xl-sft_lora_b"]


def test_bad_adapter_files_are_refused_at_install_naming_the_problem(tiny_root, tmp_path):
    reg = LoraRegistry(tmp_path / "loras")
    xl, turbo = get_variant("xl-sft"), get_variant("turbo")
    pickle = tmp_path / "adapter.bin"
    pickle.write_bytes(b"\x80\x04not read")
    with pytest.raises(AdapterError, match="only .safetensors"):
        reg.install(pickle, xl, base_shapes(tiny_root, xl))
    stray = tmp_path / "stray.safetensors"
    save_file({"base_model.model.layers.0.self_attn.nothing.lora_A.weight": torch.zeros(4, 96),
               "base_model.model.layers.0.self_attn.nothing.lora_B.weight": torch.zeros(96, 4)}, str(stray))
    with pytest.raises(AdapterError, match="nothing"):
        reg.install(stray, xl, base_shapes(tiny_root, xl))
    with pytest.raises(AdapterError):  # an XL adapter on the 2B shapes
        reg.install(ADAPTERS / "xl-sft_lora_a", turbo, base_shapes(tiny_root, turbo))
    with pytest.raises(AdapterError, match="adapter name"):
        reg.install(ADAPTERS / "xl-sft_lora_a", xl, base_shapes(tiny_root, xl), "../escape")
    assert reg.entries() == [] and not (tmp_path / "loras").exists()  # checked before anything is copied


def test_the_cache_keeps_adapters_within_its_budget(registry, tiny_root):
    pipe = CantataPipeline.from_pretrained(tiny_root, "xl-sft", device="cpu", dtype="fp32", download=False)
    style, voice = registry.find("style"), registry.find("voice")
    cache = AdapterCache(pipe.dit.transformer, budget_bytes=style.bytes + voice.bytes)
    first = cache.get(style.path)
    assert cache.get(style.path) is first  # loaded once
    second = cache.get(voice.path)
    assert len(cache.cached()) == 2 and cache.loaded_bytes == adapter_bytes(first) + adapter_bytes(second)
    small = AdapterCache(pipe.dit.transformer, budget_bytes=max(style.bytes, voice.bytes))
    small.get(style.path)
    small.get(voice.path)  # over budget: the least recently used goes
    assert small.cached() == [str(voice.path.resolve())]
    small.get(style.path)
    assert small.cached() == [str(style.path.resolve())]


# -- the request field ------------------------------------------------------------------------------

def test_lora_field_resolves_installed_adapters(registry):
    task = validate_audio_inference(audio_task(lora=[{"model": "style", "weight": 0.8},
                                                     {"model": "cantata-lora:voice@1"}]), loras=registry)
    assert task.loras == (LoraChoice("style", str(registry.find("style").path), 0.8),
                          LoraChoice("voice", str(registry.find("voice").path), 1.0))
    assert type(task).from_json(task.to_json()) == task  # stored and read back by the job layer
    request = generation_request(task)
    assert request.adapters == [(str(registry.find("style").path), 0.8), (str(registry.find("voice").path), 1.0)]
    plain = validate_audio_inference(audio_task(), loras=registry)
    assert plain.loras == () and batch_key(plain) == batch_key(task)  # adapters never split a batch


@pytest.mark.parametrize("lora, code, parameter, words", [
    ([{"model": "turbo2b"}], "invalidLoraModel", "lora[0].model", "made for turbo"),
    ([{"model": "nope"}], "invalidLoraModel", "lora[0].model", "no adapter named 'nope'"),
    ([{"model": "style"}, {"model": "cantata-lora:style@1"}], "invalidLora", "lora[1].model", "listed twice"),
    ([{"model": "style", "weight": -4.5}], "invalidLoraWeight", "lora[0].weight", "between -4 and 4"),
    ([{"model": ""}], "invalidLoraModel", "lora[0].model", "name or AIR"),
    ([{"model": "style"}] * 5, "invalidLora", "lora", "at most 4"),
])
def test_bad_lora_fields_name_the_parameter(registry, lora, code, parameter, words):
    with pytest.raises(RunwareError) as info:
        validate_audio_inference(audio_task(lora=lora), loras=registry)
    assert (info.value.code, info.value.parameter) == (code, parameter)
    assert words in info.value.message and info.value.http_status == 400


def test_a_2b_adapter_serves_the_2b_model(registry):
    task = validate_audio_inference(audio_task(TURBO, lora=[{"model": "turbo2b", "weight": 0.5}]), loras=registry)
    assert [c.name for c in task.loras] == ["turbo2b"]


def test_command_line_lora_arguments():
    from cantata.cli import _lora_choice
    from cantata.client import build_task

    assert _lora_choice("style:0.8") == ("style", 0.8)
    assert _lora_choice("style") == ("style", 1.0)
    assert _lora_choice("./runs/v2:final/lokr_weights.safetensors:-0.5") == ("./runs/v2:final/lokr_weights.safetensors", -0.5)
    task = build_task(XL_SFT, ["lora.0.model=style", "lora.0.weight=0.8", "lora.1.model=cantata-lora:voice@1",
                               "lora.1.weight=1"], "async")
    assert task["lora"] == [{"model": "style", "weight": 0.8}, {"model": "cantata-lora:voice@1", "weight": 1.0}]


# -- modelSearch ------------------------------------------------------------------------------------

def search(registry, **fields) -> dict:
    task = {"taskType": "modelSearch", "taskUUID": str(uuid.uuid4()), **fields}
    return model_search(task, catalogue_sources(("xl-sft", "turbo"), registry))


def test_model_search_lists_checkpoints_and_adapters(registry):
    everything = search(registry)
    assert everything["totalResults"] == 5 and everything["taskType"] == "modelSearch"
    assert [m["air"] for m in everything["results"][:2]] == [XL_SFT, TURBO]
    loras = search(registry, category="lora", architecture="ace-step-1.5-xl")
    assert [(m["name"], m["baseModel"], m["type"]) for m in loras["results"]] == [
        ("style", XL_SFT, "lora"), ("voice", XL_SFT, "lokr")]
    assert search(registry, search="VOICE")["results"][0]["air"] == "cantata-lora:voice@1"
    page = search(registry, limit=2, offset=4)
    assert page["totalResults"] == 5 and [m["name"] for m in page["results"]] == ["voice"]
    assert search(registry, category="checkpoint", tags=["turbo"])["results"][0]["defaultSteps"] == 8


@pytest.mark.parametrize("fields, code, parameter", [
    ({"category": "vae"}, "invalidModelSearch", "category"),
    ({"limit": 0}, "invalidModelSearch", "limit"),
    ({"offset": -1}, "invalidModelSearch", "offset"),
    ({"search": 5}, "invalidModelSearch", "search"),
    ({"tags": "lora"}, "invalidModelSearch", "tags"),
    ({"visibility": "hidden"}, "invalidModelSearch", "visibility"),
    ({"sort": "name"}, "unsupportedParameter", "sort"),
])
def test_model_search_validates_every_field(registry, fields, code, parameter):
    with pytest.raises(RunwareError) as info:
        search(registry, **fields)
    assert (info.value.code, info.value.parameter) == (code, parameter)


# -- many adapters in one batch ----------------------------------------------------------------------

def assert_close(ours: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> None:
    ours, ref = ours.double(), ref.double()
    rel = ((ours - ref).norm() / ref.norm()).item()
    max_rel = ((ours - ref).abs().max() / ref.abs().max()).item()
    assert rel <= tol and max_rel <= tol, f"rel L2 {rel:.3e}, max-abs-rel {max_rel:.3e}"


def test_requests_with_different_adapters_share_a_batch_and_match_their_solo_runs(registry, tiny_root):
    pipe = CantataPipeline.from_pretrained(tiny_root, "xl-sft", device="cpu", dtype="fp32", download=False)
    style, voice = str(registry.find("style").path), str(registry.find("voice").path)

    def request(seed: int, adapters) -> GenerationRequest:
        return GenerationRequest(caption="dusty drums", duration=10.0, seeds=[seed], steps=3, adapters=adapters)

    two = request(1, [(style, 0.8), (voice, 0.5)])
    none = request(2, [])
    one = request(3, [(voice, 1.0)])
    assert len({pipe.batch_key(r) for r in (two, none, one)}) == 1
    batched = pipe.generate_batch([two, none, one])
    for req, got in zip((two, none, one), batched):
        assert_close(got.latents, pipe.generate(req).latents)
    base = pipe.generate(request(1, []))
    assert not torch.allclose(batched[0].latents, base.latents, atol=1e-4)  # the adapters act
    zero = pipe.generate(request(1, [(style, 0.0), (voice, 0.0)]))
    assert torch.equal(zero.latents, base.latents) and torch.equal(zero.audio, base.audio)  # weight 0: bit for bit


def test_a_parity_kit_case_through_the_api_layers(tmp_path, parity_root, pipelines):
    """xl-sft/t2m_lora_a as a Runware task: the adapter installed in a registry and named in `lora`,
    validated, stored and read back, mapped by the job layer and run as the worker runs a batch;
    the final latents match the official ones. The kit renders 6 s, under the API's 30 s floor, so
    the validated task's duration is set to the kit's after validation (nothing else changes)."""
    from dataclasses import replace

    from cantata.jobs.task import AudioInferenceTask
    from parity import LORA_KIT

    case = LORA_KIT.manifest["xl-sft/t2m_lora_a"]
    pipe = pipelines("xl-sft")
    reg = LoraRegistry(tmp_path / "loras")
    reg.install(ADAPTERS / "xl-sft_lora_a", get_variant("xl-sft"), pipe.dit.transformer, "kit-a")
    task = validate_audio_inference(audio_task(
        positivePrompt=case["caption"], seed=case["seed"], steps=case["infer_steps"], CFGScale=case["guidance_scale"],
        settings={"lyrics": case["lyrics"], "vocalLanguage": case["vocal_language"], "bpm": case["bpm"],
                  "keyScale": case["keyscale"], "timeSignature": int(case["timesignature"])},
        lora=[{"model": "kit-a", "weight": case["adapters"][0]["scale"]}]), loras=reg)
    task = AudioInferenceTask.from_json(replace(task, duration=case["duration_s"]).to_json())
    [result] = pipe.generate_batch([generation_request(task)])
    LORA_KIT.assert_matches("xl-sft/t2m_lora_a/target_latents", result.latents)


# -- a real server -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_lora_add_then_requests_over_http_and_websocket(tmp_path_factory):
    root = server_checkpoints(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("lora-server")
    data = tmp / "data"
    added = cantata_cli("lora", "--data-dir", str(data), "add", str(ADAPTERS / "xl-sft_lora_a"), "--name", "style",
                        "--checkpoints", str(root), timeout=120)
    assert added.returncode == 0 and "installed style (lora, 32 modules, for xl-sft)" in added.stdout, added.stderr
    bad = tmp / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    refused = cantata_cli("lora", "--data-dir", str(data), "add", str(bad), "--checkpoints", str(root), timeout=120)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and "broken.safetensors" in refused.stderr

    server = ServerProcess(root, data, free_port(), "--demo").start()
    try:
        found = server.post([{"taskType": "modelSearch", "taskUUID": str(uuid.uuid4()), "category": "lora"}]).json()
        assert [(m["name"], m["baseModel"]) for m in found["data"][0]["results"]] == [("style", XL_SFT)]

        done = server.post([audio_task(outputFormat="WAV", lora=[{"model": "style", "weight": 0.8}])], timeout=300)
        assert done.status_code == 200, done.text
        audio, rate, _ = fetch_audio(done.json()["data"][0]["audioURL"])
        assert rate == 48_000 and audio.shape[0] == 30 * 48_000

        wrong = server.post([audio_task(lora=[{"model": "voice"}])])
        error = wrong.json()["errors"][0]
        assert wrong.status_code == 400 and (error["code"], error["parameter"]) == ("invalidLoraModel", "lora[0].model")

        # installed while the server runs: the next request (over the WebSocket) may use it at once
        assert cantata_cli("lora", "--data-dir", str(data), "add", str(ADAPTERS / "xl-sft_lokr"), "--name", "voice",
                           "--checkpoints", str(root), timeout=120).returncode == 0
        out = tmp / "out"
        ran = cantata_cli("run", XL_SFT, "positivePrompt=lo-fi hip hop", "duration=30", "steps=2", "outputFormat=WAV",
                          "lora.0.model=voice", "lora.0.weight=0.5", "lora.1.model=cantata-lora:style@1",
                          "--url", server.ws_url, "--ws", "--output-dir", str(out), timeout=300)
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert len(list(out.glob("*.wav"))) == 1
        listed = cantata_cli("lora", "--data-dir", str(data), "list", timeout=60)
        assert [line.split("\t")[:3] for line in listed.stdout.splitlines()] == [
            ["style", "lora", "xl-sft"], ["voice", "lokr", "xl-sft"]]
    finally:
        server.stop()
