"""Strings that are not valid Unicode (lone UTF-16 surrogates, a legal JSON escape) are refused at
validation with the field's own code, and no error object ever carries one (issue 12, item 2)."""

import json

import pytest

from cantata.api.errors import RunwareError
from cantata.api.validation import validate_audio_inference, validate_task_uuid

UUID = "a770f077-f413-47de-9dac-be0b26a35da6"
BASE = "runware:ace-step@v1.5-base"
BAD = "caf\u00e9 \ud800 jazz"  # a lone high surrogate inside otherwise fine text
SRC = {"audio": "https://example.com/song.mp3"}


def req(model="runware:ace-step@v1.5-xl-sft", settings=None, **fields):
    task = {"taskType": "audioInference", "taskUUID": UUID, "model": model, "positivePrompt": "lofi piano",
            **fields}
    if settings is not None:
        task["settings"] = settings
    return task


CASES = [
    ("taskUUID", req(taskUUID=UUID[:-1] + "\ud800"), "invalidTaskUUID", "taskUUID"),
    ("taskType", req(taskType="audioInference\ud800"), "invalidTaskType", "taskType"),
    ("model", req(model="runware:ace-step@v1.5-xl-sft\udfff"), "invalidModel", "model"),
    ("positivePrompt", req(positivePrompt=BAD), "invalidPositivePrompt", "positivePrompt"),
    ("negativePrompt", req(negativePrompt=BAD), "invalidNegativePrompt", "negativePrompt"),
    ("outputType", req(outputType="URL\ud800"), "invalidOutputType", "outputType"),
    ("outputFormat", req(outputFormat="mp3\ud800"), "invalidOutputFormat", "outputFormat"),
    ("deliveryMethod", req(deliveryMethod="sync\ud800"), "invalidDeliveryMethod", "deliveryMethod"),
    ("webhookURL", req(webhookURL="https://example.com/\ud800"), "invalidWebhookURL", "webhookURL"),
    ("uploadEndpoint", req(uploadEndpoint="https://ex\ud800ample.com/put"), "invalidUploadEndpoint",
     "uploadEndpoint"),
    ("inputs.audio", req(inputs={"audio": "https://example.com/\ud800.mp3"}), "invalidInputsAudio", "inputs.audio"),
    ("inputs.referenceAudios", req(inputs={"referenceAudios": ["https://example.com/a.wav", "\udc00"]}),
     "invalidReferenceAudios", "inputs.referenceAudios"),
    ("lyrics", req(settings={"lyrics": "[Verse]\nla la la " + BAD}), "invalidLyrics", "settings.lyrics"),
    ("keyScale", req(settings={"keyScale": "C\ud800 major"}), "invalidKeyScale", "settings.keyScale"),
    ("timeSignature", req(settings={"timeSignature": "4\ud800"}), "invalidTimeSignature", "settings.timeSignature"),
    ("vocalLanguage", req(settings={"vocalLanguage": "en\ud800"}), "invalidVocalLanguage", "settings.vocalLanguage"),
    ("guidanceType", req(settings={"guidanceType": "\ud800apg"}), "invalidGuidanceType", "settings.guidanceType"),
    ("repaintMode", req(inputs=SRC, settings={"repaintingStart": 1, "repaintMode": "balanced\ud800"}),
     "invalidRepaintMode", "settings.repaintMode"),
    ("task", req(BASE, inputs=SRC, settings={"task": "lego\ud800", "trackName": "drums"}), "invalidTask",
     "settings.task"),
    ("trackName", req(BASE, inputs=SRC, settings={"task": "extract", "trackName": "drums\ud800"}),
     "invalidTrackName", "settings.trackName"),
    ("trackClasses", req(BASE, inputs=SRC, settings={"task": "complete", "trackClasses": ["bass", "\ud800"]}),
     "invalidTrackClasses", "settings.trackClasses"),
    ("unknown top-level key", req(**{"fo\ud800o": 1}), "unsupportedParameter", "fo\\ud800o"),
    ("unknown settings key", req(settings={"\udfffx": 1}), "unsupportedParameter", "settings.\\udfffx"),
    ("unknown inputs key", req(inputs={"a\ud800": "x"}), "unsupportedParameter", "inputs.a\\ud800"),
    ("unknown audioSettings key", req(audioSettings={"\ud83d": 1}), "unsupportedParameter",
     "audioSettings.\\ud83d"),
    ("advancedFeatures key", req(advancedFeatures={"\ud800": True}), "unsupportedParameter",
     "advancedFeatures.\\ud800"),
]


def _encodes(value) -> None:
    """The error object survives the strictest rendering: UTF-8 JSON without escapes."""
    json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")


@pytest.mark.parametrize("task, code, parameter", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_unicode_gets_the_fields_own_code(task, code, parameter):
    with pytest.raises(RunwareError) as info:
        validate_audio_inference(task)
    err = info.value
    assert (err.code, err.parameter) == (code, parameter), err.message
    body = err.to_dict()
    _encodes(body)
    assert body.get("taskUUID") == (UUID if task["taskUUID"] == UUID else None)


def test_the_same_text_with_valid_unicode_passes():
    """The check is about encodability, not about non-ASCII text."""
    task = validate_audio_inference(req(positivePrompt="café 🎷 jazz, 日本語", negativePrompt="ß",
                                        settings={"lyrics": "[Verse]\nCœur brisé 🎵 la la la"}))
    assert task.positive_prompt == "café 🎷 jazz, 日本語"
    with pytest.raises(RunwareError) as info:
        validate_audio_inference(req(**{"clé_🎵": 1}))
    assert info.value.parameter == "clé_🎵"  # valid keys are echoed exactly as sent


def test_a_surrogate_task_uuid_is_never_echoed():
    bad_uuid = "\ud800" * 36
    with pytest.raises(RunwareError) as info:
        validate_audio_inference(req(taskUUID=bad_uuid))
    assert info.value.code == "invalidTaskUUID" and "taskUUID" not in info.value.to_dict()
    with pytest.raises(RunwareError) as info:  # a later error still leaves the bad echo out
        validate_audio_inference(req(taskUUID="not-a-uuid\ud800", positivePrompt=BAD))
    assert "taskUUID" not in info.value.to_dict()
    with pytest.raises(RunwareError) as info:
        validate_task_uuid(bad_uuid)
    _encodes(info.value.to_dict())
