"""The audioInference validator: every rule of api.md, the error bodies, and a fuzz run."""

import json
import math
import random

import pytest

from cantata.api.errors import DEFAULT_DOCS_BASE, ERROR_CODES, RunwareError, documentation_url
from cantata.api.validation import (
    AIR_CHOICES, TOP_LEVEL_KEYS, SETTINGS_KEYS, AudioInferenceTask, allowed_settings_keys, validate_audio_inference,
    validate_task_uuid,
)
from cantata.audio import codecs
from cantata.limits import Limits
from cantata.models.variants import VARIANTS
from cantata.models.vocabulary import KEY_SCALES, VOCAL_LANGUAGES
from examples import docs_example

UUID = "a770f077-f413-47de-9dac-be0b26a35da6"
XL_SFT, XL_BASE, XL_TURBO = (f"runware:ace-step@v1.5-{n}" for n in ("xl-sft", "xl-base", "xl-turbo"))
BASE, TURBO = "runware:ace-step@v1.5-base", "runware:ace-step@v1.5-turbo"
SRC = {"audio": "https://example.com/song.mp3"}
DROP = object()


def req(model=XL_SFT, **fields):
    """A valid text-to-music task, changed by `fields` (DROP removes a key)."""
    task = {"taskType": "audioInference", "taskUUID": UUID, "model": model, "positivePrompt": "lofi piano"}
    task.update(fields)
    return {k: v for k, v in task.items() if v is not DROP}


def st(model=XL_SFT, inputs=None, **settings):
    """A task with these settings (and optionally inputs)."""
    return req(model, settings=settings, **({"inputs": inputs} if inputs else {}))


BAD = [
    # task, taskUUID, taskType, model
    ("not an object", [], "invalidTaskObject", None),
    ("string task", "audioInference", "invalidTaskObject", None),
    ("no uuid", req(taskUUID=DROP), "missingTaskUUID", "taskUUID"),
    ("uuid int", req(taskUUID=123), "invalidTaskUUID", "taskUUID"),
    ("uuid garbage", req(taskUUID="not-a-uuid"), "invalidTaskUUID", "taskUUID"),
    ("uuid v1", req(taskUUID="a770f077-f413-17de-9dac-be0b26a35da6"), "invalidTaskUUID", "taskUUID"),
    ("uuid newline", req(taskUUID=UUID + "\n"), "invalidTaskUUID", "taskUUID"),
    ("no taskType", req(taskType=DROP), "missingTaskType", "taskType"),
    ("wrong taskType", req(taskType="imageInference"), "invalidTaskType", "taskType"),
    ("no model", req(model=DROP), "missingModel", "model"),
    ("runware 2B sft", req("runware:ace-step@v1.5-sft"), "invalidModel", "model"),
    ("model int", req(5), "invalidModel", "model"),
    ("model list", req(["xl-sft"]), "invalidModel", "model"),
    # top-level keys and per-model availability
    ("unknown key", req(foo=1), "unsupportedParameter", "foo"),
    ("upstream name", req(shift=3.0), "unsupportedParameter", "shift"),
    ("turbo negativePrompt", req(TURBO, negativePrompt="noise"), "unsupportedParameter", "negativePrompt"),
    ("turbo CFGScale", req(TURBO, CFGScale=7), "unsupportedCFGScaleForModel", "CFGScale"),
    ("xl-turbo CFGScale", req(XL_TURBO, CFGScale=7), "unsupportedCFGScaleForModel", "CFGScale"),
    ("advancedFeatures non-XL", req(BASE, advancedFeatures={}), "unsupportedParameter", "advancedFeatures"),
    ("advancedFeatures content", req(advancedFeatures={"x": 1}), "unsupportedParameter", "advancedFeatures.x"),
    ("advancedFeatures string", req(advancedFeatures="yes"), "invalidAdvancedFeatures", "advancedFeatures"),
    # prompts
    ("no prompt", req(positivePrompt=DROP), "missingPositivePrompt", "positivePrompt"),
    ("null prompt", req(positivePrompt=None), "missingPositivePrompt", "positivePrompt"),
    ("prompt 1 char", req(positivePrompt="a"), "invalidPositivePrompt", "positivePrompt"),
    ("prompt blank", req(positivePrompt="     "), "invalidPositivePrompt", "positivePrompt"),
    ("prompt too long", req(positivePrompt="a" * 3001), "invalidPositivePrompt", "positivePrompt"),
    ("prompt int", req(positivePrompt=42), "invalidPositivePrompt", "positivePrompt"),
    ("negative too long", req(negativePrompt="a" * 3001), "invalidNegativePrompt", "negativePrompt"),
    ("negative list", req(negativePrompt=["x"]), "invalidNegativePrompt", "negativePrompt"),
    ("negative with CFG 1", req(negativePrompt="noise", CFGScale=1), "conflictingParameters",
     ["negativePrompt", "CFGScale"]),
    # duration
    ("duration short", req(duration=29.9), "invalidDurationNumber", "duration"),
    ("duration long", req(duration=300.1), "invalidDurationNumber", "duration"),
    ("duration 2 decimals", req(duration=60.25), "invalidDurationNumber", "duration"),
    ("duration string", req(duration="60"), "invalidDurationNumber", "duration"),
    ("duration NaN", req(duration=math.nan), "invalidDurationNumber", "duration"),
    ("duration inf", req(duration=math.inf), "invalidDurationNumber", "duration"),
    ("duration bool", req(duration=True), "invalidDurationNumber", "duration"),
    ("duration huge int", req(duration=10**400), "invalidDurationNumber", "duration"),
    ("duration with audio", req(duration=60, inputs=SRC), "conflictingParameters", ["duration", "inputs.audio"]),
    # seed, steps, CFGScale, strength, numberResults
    ("seed string", req(seed="5"), "invalidSeed", "seed"),
    ("seed negative", req(seed=-1), "invalidSeed", "seed"),
    ("seed 2**63", req(seed=2**63), "invalidSeed", "seed"),
    ("seed float", req(seed=5.0), "invalidSeed", "seed"),
    ("seed bool", req(seed=True), "invalidSeed", "seed"),
    ("steps bool", req(steps=True), "invalidSteps", "steps"),
    ("steps 0", req(steps=0), "invalidSteps", "steps"),
    ("steps 301", req(steps=301), "invalidSteps", "steps"),
    ("turbo steps 21", req(TURBO, steps=21), "invalidSteps", "steps"),
    ("xl-turbo steps 21", req(XL_TURBO, steps=21), "invalidSteps", "steps"),
    ("CFG below 1", req(CFGScale=0.5), "invalidCFGScale", "CFGScale"),
    ("CFG above 30", req(CFGScale=31), "invalidCFGScale", "CFGScale"),
    ("CFG string", req(CFGScale="7"), "invalidCFGScale", "CFGScale"),
    ("CFG NaN", req(CFGScale=math.nan), "invalidCFGScale", "CFGScale"),
    ("strength 1.5", req(strength=1.5, inputs=SRC), "invalidStrength", "strength"),
    ("strength without audio", req(strength=0.5), "missingInputsAudio", ["strength", "inputs.audio"]),
    ("numberResults 0", req(numberResults=0), "invalidNumberResults", "numberResults"),
    ("numberResults 4", req(numberResults=4), "invalidNumberResults", "numberResults"),
    ("numberResults bool", req(numberResults=False), "invalidNumberResults", "numberResults"),
    # output options
    ("outputType case", req(outputType="url"), "invalidOutputType", "outputType"),
    ("outputFormat AAC", req(outputFormat="AAC"), "invalidOutputFormat", "outputFormat"),
    ("outputFormat int", req(outputFormat=3), "invalidOutputFormat", "outputFormat"),
    ("audioSettings string", req(audioSettings="x"), "invalidAudioSettings", "audioSettings"),
    ("audioSettings WAV", req(outputFormat="WAV", audioSettings={"sampleRate": 48000}), "conflictingParameters",
     ["audioSettings", "outputFormat"]),
    ("audioSettings flac", req(outputFormat="flac", audioSettings={"bitrate": 128}), "conflictingParameters",
     ["audioSettings", "outputFormat"]),
    ("audioSettings key", req(audioSettings={"foo": 1}), "unsupportedParameter", "audioSettings.foo"),
    ("sampleRate 96k", req(audioSettings={"sampleRate": 96000}), "invalidSampleRate", "audioSettings.sampleRate"),
    ("sampleRate string", req(audioSettings={"sampleRate": "48000"}), "invalidSampleRate", "audioSettings.sampleRate"),
    ("OGG 11025", req(outputFormat="OGG", audioSettings={"sampleRate": 11025}), "invalidSampleRate",
     "audioSettings.sampleRate"),
    ("channels 3", req(audioSettings={"channels": 3}), "invalidChannels", "audioSettings.channels"),
    ("channels bool", req(audioSettings={"channels": True}), "invalidChannels", "audioSettings.channels"),
    ("bitrate 400", req(audioSettings={"bitrate": 400}), "invalidBitrate", "audioSettings.bitrate"),
    ("bitrate 16 @48k", req(audioSettings={"bitrate": 16}), "invalidBitrate", "audioSettings.bitrate"),
    ("bitrate 128 @8k", req(audioSettings={"sampleRate": 8000, "bitrate": 128}), "invalidBitrate",
     "audioSettings.bitrate"),
    ("bitrate float", req(audioSettings={"bitrate": 128.5}), "invalidBitrate", "audioSettings.bitrate"),
    ("deliveryMethod", req(deliveryMethod="webhook"), "invalidDeliveryMethod", "deliveryMethod"),
    ("webhook ftp", req(webhookURL="ftp://example.com/x"), "invalidWebhookURL", "webhookURL"),
    ("webhook relative", req(webhookURL="/hook"), "invalidWebhookURL", "webhookURL"),
    ("webhook bad ipv6", req(webhookURL="http://[::1"), "invalidWebhookURL", "webhookURL"),
    ("webhook bad port", req(webhookURL="http://example.com:99999/"), "invalidWebhookURL", "webhookURL"),
    ("upload int", req(uploadEndpoint=5), "invalidUploadEndpoint", "uploadEndpoint"),
    ("upload space", req(uploadEndpoint="https://exa mple.com/put"), "invalidUploadEndpoint", "uploadEndpoint"),
    ("includeCost string", req(includeCost="true"), "invalidIncludeCost", "includeCost"),
    ("includeCost 1", req(includeCost=1), "invalidIncludeCost", "includeCost"),
    ("ttl 59", req(ttl=59), "invalidTTL", "ttl"),
    ("ttl string", req(ttl="3600"), "invalidTTL", "ttl"),
    ("ttl base64", req(ttl=3600, outputType="base64Data"), "conflictingParameters", ["ttl", "outputType"]),
    # inputs
    ("inputs string", req(inputs="x"), "invalidInputs", "inputs"),
    ("inputs list", req(inputs=[SRC]), "invalidInputs", "inputs"),
    ("inputs key", req(inputs={"video": "x"}), "unsupportedParameter", "inputs.video"),
    ("audio empty", req(inputs={"audio": ""}), "invalidInputsAudio", "inputs.audio"),
    ("audio int", req(inputs={"audio": 5}), "invalidInputsAudio", "inputs.audio"),
    ("refs string", req(inputs={"referenceAudios": "x"}), "invalidReferenceAudios", "inputs.referenceAudios"),
    ("refs 5", req(inputs={"referenceAudios": ["a", "b", "c", "d", "e"]}), "invalidReferenceAudios",
     "inputs.referenceAudios"),
    ("refs empty item", req(inputs={"referenceAudios": [""]}), "invalidReferenceAudios", "inputs.referenceAudios"),
    # settings keys
    ("settings list", req(settings=[]), "invalidSettings", "settings"),
    ("settings string", req(settings="bpm=120"), "invalidSettings", "settings"),
    ("settings unknown", st(shift=3), "unsupportedParameter", "settings.shift"),
    ("turbo guidanceType", st(TURBO, guidanceType="cfg"), "unsupportedParameter", "settings.guidanceType"),
    ("turbo cfgIntervalStart", st(TURBO, cfgIntervalStart=0), "unsupportedParameter", "settings.cfgIntervalStart"),
    ("xl-turbo cfgIntervalEnd", st(XL_TURBO, cfgIntervalEnd=1), "unsupportedParameter", "settings.cfgIntervalEnd"),
    ("xl-sft task", st(task="lego", inputs=SRC), "unsupportedParameter", "settings.task"),
    ("turbo trackName", st(TURBO, trackName="drums"), "unsupportedParameter", "settings.trackName"),
    # settings values
    ("lyrics short", st(lyrics="la la"), "invalidLyrics", "settings.lyrics"),
    ("lyrics long", st(lyrics="a" * 3001), "invalidLyrics", "settings.lyrics"),
    ("lyrics list", st(lyrics=["[verse]"]), "invalidLyrics", "settings.lyrics"),
    ("bpm 29", st(bpm=29), "invalidBpm", "settings.bpm"),
    ("bpm float", st(bpm=120.0), "invalidBpm", "settings.bpm"),
    ("bpm string", st(bpm="120"), "invalidBpm", "settings.bpm"),
    ("key H", st(keyScale="H major"), "invalidKeyScale", "settings.keyScale"),
    ("key lower note", st(keyScale="c major"), "invalidKeyScale", "settings.keyScale"),
    ("key mode", st(keyScale="C dorian"), "invalidKeyScale", "settings.keyScale"),
    ("key int", st(keyScale=5), "invalidKeyScale", "settings.keyScale"),
    ("timeSig 5", st(timeSignature=5), "invalidTimeSignature", "settings.timeSignature"),
    ("timeSig 4/4", st(timeSignature="4/4"), "invalidTimeSignature", "settings.timeSignature"),
    ("timeSig float", st(timeSignature=4.0), "invalidTimeSignature", "settings.timeSignature"),
    ("timeSig bool", st(timeSignature=True), "invalidTimeSignature", "settings.timeSignature"),
    ("language name", st(vocalLanguage="english"), "invalidVocalLanguage", "settings.vocalLanguage"),
    ("language case", st(vocalLanguage="EN"), "invalidVocalLanguage", "settings.vocalLanguage"),
    ("guidanceType adg", st(guidanceType="adg"), "invalidGuidanceType", "settings.guidanceType"),
    ("cfg start <0", st(cfgIntervalStart=-0.1), "invalidCfgInterval", "settings.cfgIntervalStart"),
    ("cfg end >1", st(cfgIntervalEnd=1.5), "invalidCfgInterval", "settings.cfgIntervalEnd"),
    ("cfg start > end", st(cfgIntervalStart=0.8, cfgIntervalEnd=0.5), "invalidCfgInterval",
     ["settings.cfgIntervalStart", "settings.cfgIntervalEnd"]),
    ("cover scale 2", st(coverConditioningScale=2, inputs=SRC), "invalidCoverConditioningScale",
     "settings.coverConditioningScale"),
    ("cover scale no audio", st(coverConditioningScale=0.5), "missingInputsAudio",
     ["settings.coverConditioningScale", "inputs.audio"]),
    ("repaint start -301", st(repaintingStart=-301, inputs=SRC), "invalidRepaintingStart", "settings.repaintingStart"),
    ("repaint start no audio", st(repaintingStart=10), "missingInputsAudio",
     ["settings.repaintingStart", "inputs.audio"]),
    ("repaint end no audio", st(repaintingEnd=10), "missingInputsAudio", ["settings.repaintingEnd", "inputs.audio"]),
    ("repaint end -1", st(repaintingEnd=-1, inputs=SRC), "invalidRepaintingEnd", "settings.repaintingEnd"),
    ("repaint end < start", st(repaintingStart=20, repaintingEnd=10, inputs=SRC), "invalidRepaintingEnd",
     "settings.repaintingEnd"),
    ("repaint end 0", st(repaintingEnd=0, inputs=SRC), "invalidRepaintingEnd", "settings.repaintingEnd"),
    ("repaintMode wild", st(repaintMode="wild", repaintingStart=1, inputs=SRC), "invalidRepaintMode",
     "settings.repaintMode"),
    ("repaintMode no region", st(repaintMode="conservative", inputs=SRC), "missingRepaintingRange",
     ["settings.repaintMode", "settings.repaintingStart", "settings.repaintingEnd"]),
    ("repaintStrength 2", st(repaintStrength=2, repaintingStart=1, inputs=SRC), "invalidRepaintStrength",
     "settings.repaintStrength"),
    ("repaintStrength aggressive", st(repaintMode="aggressive", repaintStrength=0.3, repaintingStart=1, inputs=SRC),
     "conflictingParameters", ["settings.repaintStrength", "settings.repaintMode"]),
    ("task cover", st(BASE, task="cover", inputs=SRC), "invalidTask", "settings.task"),
    ("lego no audio", st(BASE, task="lego", trackName="drums"), "missingInputsAudio",
     ["settings.task", "inputs.audio"]),
    ("lego no track", st(XL_BASE, task="lego", inputs=SRC), "missingTrackName", "settings.trackName"),
    ("extract region", st(BASE, task="extract", trackName="vocals", repaintingStart=5, inputs=SRC),
     "conflictingParameters", ["settings.task", "settings.repaintingStart"]),
    ("trackName kazoo", st(BASE, task="extract", trackName="kazoo", inputs=SRC), "invalidTrackName",
     "settings.trackName"),
    ("trackName no task", st(BASE, trackName="drums", inputs=SRC), "conflictingParameters",
     ["settings.trackName", "settings.task"]),
    ("complete no classes", st(BASE, task="complete", inputs=SRC), "missingTrackClasses", "settings.trackClasses"),
    ("classes duplicate", st(BASE, task="complete", trackClasses=["drums", "drums"], inputs=SRC),
     "invalidTrackClasses", "settings.trackClasses"),
    ("classes string", st(BASE, task="complete", trackClasses="drums", inputs=SRC), "invalidTrackClasses",
     "settings.trackClasses"),
    ("classes with lego", st(BASE, task="lego", trackName="bass", trackClasses=["drums"], inputs=SRC),
     "conflictingParameters", ["settings.trackClasses", "settings.task"]),
    ("dcw string", st(dcw="yes"), "invalidDcw", "settings.dcw"),
    ("lora object", req(lora={"model": "style"}), "invalidLora", "lora"),
    ("lora too many", req(lora=[{"model": f"s{i}"} for i in range(5)]), "invalidLora", "lora"),
    ("lora item string", req(lora=["style"]), "invalidLora", "lora[0]"),
    ("lora item key", req(lora=[{"model": "style", "scale": 1}]), "unsupportedParameter", "lora[0].scale"),
    ("lora no model", req(lora=[{"weight": 1}]), "invalidLoraModel", "lora[0].model"),
    ("lora unknown", req(lora=[{"model": "style", "weight": 0.5}]), "invalidLoraModel", "lora[0].model"),
    ("lora weight 5", req(lora=[{"model": "style", "weight": 5}]), "invalidLoraWeight", "lora[0].weight"),
    ("lora weight text", req(lora=[{"model": "style", "weight": "1"}]), "invalidLoraWeight", "lora[0].weight"),
    ("thinking string", st(thinking="yes"), "invalidThinking", "settings.thinking"),
    ("thinking without a planner", st(thinking=True), "unsupportedThinking", "settings.thinking"),
    ("planner 3B", st(planner="3B"), "invalidPlanner", "settings.planner"),
    ("planner setting without a planner", st(plannerTopP=0.5), "unsupportedPlanner", "settings.plannerTopP"),
    ("planner temperature 3", st(plannerTemperature=3), "invalidPlannerTemperature", "settings.plannerTemperature"),
    ("planner CFG 0.5", st(plannerCFGScale=0.5), "invalidPlannerCFGScale", "settings.plannerCFGScale"),
    ("planner top-k float", st(plannerTopK=1.5), "invalidPlannerTopK", "settings.plannerTopK"),
    ("planner top-p 2", st(plannerTopP=2), "invalidPlannerTopP", "settings.plannerTopP"),
    ("rewrite caption string", st(rewriteCaption="no"), "invalidRewriteCaption", "settings.rewriteCaption"),
]


@pytest.mark.parametrize("task, code, parameter", [row[1:] for row in BAD], ids=[row[0] for row in BAD])
def test_bad_request(task, code, parameter):
    with pytest.raises(RunwareError) as info:
        validate_audio_inference(task)
    err = info.value
    assert (err.code, err.parameter) == (code, parameter), err.message
    assert code in ERROR_CODES
    assert err.task_type == "audioInference" and err.http_status == 400
    assert err.message and err.documentation.startswith(DEFAULT_DOCS_BASE)


def test_every_catalogued_code_is_exercised():
    assert {row[2] for row in BAD} == set(ERROR_CODES)


def test_xl_sft_docs_example():
    example = docs_example("garage")
    lyrics = example["settings"]["lyrics"]
    t = validate_audio_inference({"taskType": "audioInference", "taskUUID": UUID, **example})
    assert isinstance(t, AudioInferenceTask)
    assert (t.variant.name, t.task_kind, t.task_uuid) == ("xl-sft", "text2music", UUID)
    assert t.negative_prompt.startswith("muddy")
    assert (t.duration, t.seed, t.steps, t.cfg_scale, t.strength) == (75.0, 39665, 50, 15.0, None)
    assert isinstance(t.duration, float) and isinstance(t.cfg_scale, float)
    s = t.settings
    assert (s.bpm, s.key_scale, s.time_signature, s.vocal_language, s.guidance_type) == (132, "D minor", 4, "en", "cfg")
    assert (s.cfg_interval_start, s.cfg_interval_end, s.lyrics) == (0.0, 1.0, lyrics)
    # platform defaults
    assert (t.number_results, t.output_type, t.output_format, t.delivery_method) == (1, "URL", "MP3", "sync")
    assert (t.include_cost, t.ttl, t.webhook_url, t.upload_endpoint) == (False, None, None, None)
    assert t.audio_settings.sample_rate == 48000 and t.audio_settings.channels == 2
    assert t.audio_settings.bitrate == codecs.default_bitrate("MP3", 48000, 2)
    assert (t.inputs.audio, t.inputs.reference_audios) == (None, ())
    assert (s.repainting_start, s.repainting_end, s.task, s.dcw) == (None, None, None, False)
    assert (s.cover_conditioning_scale, s.repaint_mode, s.repaint_strength) == (1.0, "balanced", 0.5)


def test_xl_base_docs_example():
    t = validate_audio_inference({"taskType": "audioInference", "taskUUID": UUID, **docs_example("nocturne")})
    assert (t.variant.name, t.duration, t.seed, t.steps, t.cfg_scale) == ("xl-base", 150.0, 81563, 50, 11.5)
    s = t.settings
    assert (s.bpm, s.key_scale, s.time_signature, s.vocal_language, s.guidance_type) == (92, "D minor", 6, "es", "apg")
    assert (s.cfg_interval_start, s.cfg_interval_end) == (0.0, 0.85)


def test_turbo_defaults():
    t = validate_audio_inference(req(TURBO, negativePrompt=None, CFGScale=None))  # null = not given
    assert (t.steps, t.cfg_scale, t.settings.guidance_type, t.duration) == (8, None, "none", 60.0)
    t = validate_audio_inference(req("xl-sft"))  # short names and slugs work too
    assert (t.steps, t.cfg_scale, t.settings.guidance_type) == (50, 7.0, "apg")
    assert validate_audio_inference(req("ace-step-v1-5-xl-turbo")).variant.name == "xl-turbo"


@pytest.mark.parametrize("settings, inputs, kind, start, end", [
    ({}, SRC, "cover", None, None),
    ({"repaintingEnd": 12.5}, SRC, "repaint", 0.0, 12.5),
    ({"repaintingStart": -5}, SRC, "repaint", -5.0, None),
    ({"repaintingStart": 10, "repaintingEnd": 20, "repaintMode": "balanced", "repaintStrength": 0.7},
     SRC, "repaint", 10.0, 20.0),
    ({"task": "lego", "trackName": "drums", "repaintingStart": 4, "repaintingEnd": 8}, SRC, "lego", 4.0, 8.0),
    ({"task": "extract", "trackName": "vocals"}, SRC, "extract", None, None),
    ({"task": "complete", "trackClasses": ["bass", "drums"]}, SRC, "complete", None, None),
])
def test_task_kinds(settings, inputs, kind, start, end):
    t = validate_audio_inference(req(BASE, settings=settings, inputs=inputs, strength=0.6))
    assert (t.task_kind, t.duration, t.strength) == (kind, None, 0.6)
    assert (t.settings.repainting_start, t.settings.repainting_end) == (start, end)


def test_normalisation():
    t = validate_audio_inference(req(
        outputFormat="ogg", audioSettings={"sampleRate": 24000, "channels": 1, "bitrate": 64},
        settings={"keyScale": "B♭ Minor", "timeSignature": "3", "dcw": True, "vocalLanguage": "unknown"},
        inputs={"referenceAudios": ["https://example.com/ref.wav"]}, duration=42.3, numberResults=3,
        includeCost=True, ttl=3600, webhookURL="https://hooks.example.com/x?token=1", deliveryMethod="async",
    ))
    a = t.audio_settings
    assert (t.output_format, a.sample_rate, a.channels, a.bitrate) == ("OGG", 24000, 1, 64)
    assert (t.settings.key_scale, t.settings.time_signature, t.settings.dcw) == ("B♭ minor", 3, True)
    assert (t.duration, t.number_results, t.include_cost, t.ttl) == (42.3, 3, True, 3600)
    assert (t.delivery_method, t.webhook_url) == ("async", "https://hooks.example.com/x?token=1")
    assert t.inputs.reference_audios == ("https://example.com/ref.wav",)
    assert validate_audio_inference(req(outputFormat="Flac")).audio_settings is None
    assert validate_audio_inference(req(outputFormat="WAV", audioSettings={})).audio_settings is None
    assert validate_audio_inference(st(keyScale="")).settings.key_scale is None
    assert validate_audio_inference(st(keyScale="C Major")).settings.key_scale == "C major"
    assert validate_audio_inference(req(negativePrompt="")).negative_prompt is None
    assert validate_audio_inference(st(cfgIntervalStart=0.9)).settings.cfg_interval_end == 1.0
    assert validate_audio_inference(req(foo=None, settings={"bar": None})).task_kind == "text2music"


def test_limits_tighten():
    limits = Limits(max_duration=120.0, max_number_results=1)
    assert validate_audio_inference(req(), limits=limits).duration == 60.0
    with pytest.raises(RunwareError, match="between 30 and 120") as info:
        validate_audio_inference(req(duration=150), limits=limits)
    assert info.value.code == "invalidDurationNumber"
    with pytest.raises(RunwareError, match="between 1 and 1"):
        validate_audio_inference(req(numberResults=2), limits=limits)
    assert validate_audio_inference(req(), limits=Limits(max_duration=45.0)).duration == 45.0


def test_turbo_allow_list_body():
    with pytest.raises(RunwareError) as info:
        validate_audio_inference(st(TURBO, guidanceType="cfg"))
    assert info.value.allowed_values == (
        "'lyrics','bpm','keyScale','timeSignature','vocalLanguage','coverConditioningScale',"
        "'repaintingStart','repaintingEnd','repaintMode','repaintStrength','dcw','thinking','planner',"
        "'plannerTemperature','plannerCFGScale','plannerTopK','plannerTopP','rewriteCaption'"
    )
    assert allowed_settings_keys(VARIANTS["xl-base"])[-3:] == ("task", "trackName", "trackClasses")
    assert "guidanceType" in allowed_settings_keys(VARIANTS["xl-sft"])


def test_to_dict_shape():
    task = st(bpm=500)
    with pytest.raises(RunwareError) as info:
        validate_audio_inference(task, docs_base="https://music.example.com/")
    assert info.value.to_dict() == {
        "code": "invalidBpm",
        "message": "settings.bpm must be an integer between 30 and 300.",
        "parameter": "settings.bpm",
        "type": "integer",
        "taskType": "audioInference",
        "taskUUID": UUID,
        "documentation": "https://music.example.com/docs/api#request-settings-bpm",
    }
    with pytest.raises(RunwareError) as info:
        validate_audio_inference(req("nope"))
    body = info.value.to_dict()
    assert body["allowedValues"] == ",".join(f"'{air}'" for air in AIR_CHOICES)
    assert body["documentation"] == f"{DEFAULT_DOCS_BASE}/docs/api#request-model"
    for sent, echoed in (("bad", "bad"), ("x" * 101, None), (7, None)):  # echo ids a client can match
        with pytest.raises(RunwareError) as info:
            validate_audio_inference(req(taskUUID=sent))
        assert info.value.to_dict().get("taskUUID") == echoed
    assert documentation_url(["audioSettings.bitrate", "outputFormat"]) == \
        f"{DEFAULT_DOCS_BASE}/docs/api#request-audiosettings-bitrate"
    assert documentation_url(None, "http://h") == "http://h/docs/api"


def test_validate_task_uuid():
    assert validate_task_uuid(UUID.upper()) == UUID.upper()  # echoed exactly as sent
    with pytest.raises(RunwareError, match="UUID v4"):
        validate_task_uuid("a770f077-f413-47de-1dac-be0b26a35da6")  # wrong variant bits


def test_every_accepted_key_scale_reaches_the_prompt_unchanged():
    prompts = pytest.importorskip("cantata.pipeline.prompts")
    assert len(VOCAL_LANGUAGES) == 51 and len(KEY_SCALES) == 70
    assert all(prompts.normalize_keyscale(k) == k for k in KEY_SCALES)


# -- fuzz -------------------------------------------------------------------------------------------

_TOKENS = ["", "a", "URL", "MP3", "ogg", "sync", "cfg", "lego", "drums", "D minor", "4", "en", UUID,
           "https://example.com/a.mp3", "http://[::1", "ÿ\x00\ud800", "x" * 3001, *AIR_CHOICES]
_NUMBERS = [0, 1, -1, 2, 4, 30, 60.05, 300, 0.5, 1.5, 2**63, -(2**63), 10**400, 1e308, math.nan, math.inf,
            -math.inf, True, False]
_PATHS = [key for key, _ in TOP_LEVEL_KEYS] + [f"settings.{k}" for k, _ in SETTINGS_KEYS] + [
    "inputs.audio", "inputs.referenceAudios", "audioSettings.sampleRate", "audioSettings.bitrate",
    "audioSettings.channels", "advancedFeatures.x", "settings", "inputs", "audioSettings", "junk"]


def _random_json(rng, depth=0):
    roll = rng.random()
    if depth > 2 or roll < 0.35:
        return rng.choice(_NUMBERS)
    if roll < 0.7:
        return rng.choice(_TOKENS)
    if roll < 0.8:
        return None
    if roll < 0.9:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {rng.choice(_PATHS).split(".")[-1]: _random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _mutated(rng):
    if rng.random() < 0.05:
        return _random_json(rng)
    task = req(rng.choice(AIR_CHOICES), inputs=dict(SRC) if rng.random() < 0.3 else None)
    for _ in range(rng.randint(1, 4)):
        *parents, leaf = rng.choice(_PATHS).split(".")
        node = task
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[leaf] = _random_json(rng)
    return task


def test_fuzz_only_runware_errors():
    rng = random.Random(1234)
    outcomes = {"ok": 0}
    for _ in range(2000):
        task = _mutated(rng)
        try:
            result = validate_audio_inference(task)
        except RunwareError as err:
            assert err.code in ERROR_CODES, err.code
            json.dumps(err.to_dict(), allow_nan=False)
            outcomes[err.code] = outcomes.get(err.code, 0) + 1
        else:
            assert isinstance(result, AudioInferenceTask)
            outcomes["ok"] += 1
    assert len(outcomes) > 25  # the fuzz reaches many rules, and some tasks pass
