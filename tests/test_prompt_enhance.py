"""Runware's `promptEnhance` answered by the 5 Hz LM planner: the field table with its exact
codes, a real answer from the tiny planner through the in-process app (versions and max length
honoured, cost on request), the refusal without a planner, the OpenAPI entry; and the planner's
cancel check between decode steps (a plan stops within one step)."""

from __future__ import annotations

import pytest
import torch

from cantata.api.errors import RunwareError
from cantata.api.openapi import openapi_document
from cantata.api.prompt_enhance import DEFAULT_MAX_LENGTH, DEFAULT_VERSIONS, validate_prompt_enhance
from cantata.pipeline.enhance import clip, enhance_prompt
from cantata.pipeline.request import GenerationCancelled
from cantata.planner import Planner, PlanRequest
from serverkit import app_client, config, new_uuid, post

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def root(planner_root):
    return planner_root


@pytest.fixture(scope="module")
def planner(root) -> Planner:
    return Planner.from_pretrained(root, "1.7B", download=False)


def enhance_task(**fields) -> dict:
    return {"taskType": "promptEnhance", "taskUUID": new_uuid(), "prompt": "uk garage, choir", **fields}


# -- the field table -------------------------------------------------------------------------------


@pytest.mark.parametrize("fields,code,parameter", [
    ({"prompt": None}, "missingPrompt", "prompt"),
    ({"prompt": ""}, "invalidPrompt", "prompt"),
    ({"prompt": "   "}, "invalidPrompt", "prompt"),
    ({"prompt": 7}, "invalidPrompt", "prompt"),
    ({"prompt": "x" * 301}, "invalidPrompt", "prompt"),
    ({"prompt": "a\ud800b"}, "invalidPrompt", "prompt"),
    ({"promptMaxLength": 11}, "invalidPromptMaxLength", "promptMaxLength"),
    ({"promptMaxLength": 401}, "invalidPromptMaxLength", "promptMaxLength"),
    ({"promptMaxLength": 50.0}, "invalidPromptMaxLength", "promptMaxLength"),
    ({"promptMaxLength": True}, "invalidPromptMaxLength", "promptMaxLength"),
    ({"promptVersions": 0}, "invalidPromptVersions", "promptVersions"),
    ({"promptVersions": 6}, "invalidPromptVersions", "promptVersions"),
    ({"promptVersions": "2"}, "invalidPromptVersions", "promptVersions"),
    ({"includeCost": "yes"}, "invalidIncludeCost", "includeCost"),
    ({"positivePrompt": "x"}, "unsupportedParameter", "positivePrompt"),
    ({"taskUUID": "not-a-uuid"}, "invalidTaskUUID", "taskUUID"),
])
def test_bad_fields_get_runware_errors(fields, code, parameter):
    task = {k: v for k, v in enhance_task(**fields).items() if v is not None}
    with pytest.raises(RunwareError) as caught:
        validate_prompt_enhance(task)
    assert (caught.value.code, caught.value.parameter) == (code, parameter)


def test_defaults_and_bounds():
    ok = validate_prompt_enhance(enhance_task(prompt="x" * 300, promptMaxLength=12, promptVersions=5,
                                              includeCost=True))
    assert (len(ok.prompt), ok.max_length, ok.versions, ok.include_cost) == (300, 12, 5, True)
    default = validate_prompt_enhance(enhance_task())
    assert (default.max_length, default.versions, default.include_cost) == (DEFAULT_MAX_LENGTH, DEFAULT_VERSIONS,
                                                                            False)


def test_clip_cuts_at_a_word_break():
    assert clip("short", 12) == "short"
    assert clip("deep house groove, warm pads and a choir", 20) == "deep house groove"
    assert clip("x" * 30, 12) == "x" * 12


# -- the planner's answer --------------------------------------------------------------------------


def test_the_text_is_the_planners_metadata_caption_per_seed(planner):
    texts = enhance_prompt(planner, "lo-fi hip hop", versions=2, max_length=400, seeds=[3, 4])
    plans = planner.plan([PlanRequest("lo-fi hip hop", thinking=False, use_cot_caption=True, seeds=[s])
                          for s in (3, 4)])
    expected = [clip(p.metadata.get("caption") or "lo-fi hip hop", 400) for p in plans]
    assert texts == expected and all(texts)
    assert enhance_prompt(planner, "lo-fi hip hop", versions=1, max_length=400, seeds=[3]) == texts[:1]


def test_planning_polls_the_cancel_check_between_decode_steps(planner):
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(GenerationCancelled, match="planner step 3"):
        planner.plan([PlanRequest("lo-fi", thinking=False, seeds=[1])], cancelled=cancelled)
    assert len(calls) == 4


# -- through the app -------------------------------------------------------------------------------


def test_prompt_enhance_through_the_app(tmp_path, root):
    with app_client(config(tmp_path, root, planner="1.7B")) as client:
        uuid = new_uuid()
        body = post(client, [enhance_task(taskUUID=uuid, promptVersions=3, promptMaxLength=40,
                                          includeCost=True)]).json()
        assert "errors" not in body, body
        items = body["data"]
        assert len(items) == 3
        for item in items:
            assert item["taskType"] == "promptEnhance" and item["taskUUID"] == uuid
            assert isinstance(item["text"], str) and 0 < len(item["text"]) <= 40
            assert isinstance(item["cost"], float) and item["cost"] >= 0
        one = post(client, [enhance_task(promptMaxLength=12)]).json()["data"]
        assert len(one) == 1 and set(one[0]) == {"taskType", "taskUUID", "text"} and len(one[0]["text"]) <= 12
        bad = post(client, [enhance_task(promptVersions=9)])
        assert bad.status_code == 400
        error = bad.json()["errors"][0]
        assert (error["code"], error["parameter"], error["taskType"]) == ("invalidPromptVersions", "promptVersions",
                                                                         "promptEnhance")


def test_a_server_without_a_planner_refuses_prompt_enhance(tmp_path, root):
    with app_client(config(tmp_path, root, planner="none")) as client:
        reply = post(client, [enhance_task()])
        assert reply.status_code == 400
        error = reply.json()["errors"][0]
        assert (error["code"], error["parameter"]) == ("unsupportedPromptEnhance", "taskType")
        assert "planner" in error["message"]


def test_openapi_lists_prompt_enhance():
    doc = openapi_document()
    task = doc["components"]["schemas"]["PromptEnhanceTask"]
    assert task["required"] == ["taskType", "taskUUID", "prompt"]
    assert task["properties"]["promptVersions"]["maximum"] == 5
    assert task["properties"]["promptMaxLength"]["minimum"] == 12
    assert "text" in doc["components"]["schemas"]["DataItem"]["properties"]
    assert "unsupportedPromptEnhance" in doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
