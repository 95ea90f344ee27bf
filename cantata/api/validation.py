"""Validation of Runware `audioInference` tasks for the ACE-Step models (docs: api.md §1-§3, §8).

Plain JSON in; a frozen, fully defaulted `AudioInferenceTask` or the first `RunwareError` out.
Nothing else is ever raised, whatever the JSON holds, so the transports can turn any failure into
an `errors[]` item without a catch-all.

Every field's path, type, range or choices, default, error code, per-model availability and a
one-line description live in one table, `FIELDS`; the readers take a field's spec instead of
literal ranges and codes, and the OpenAPI document (`cantata.api.openapi`) is generated from the
same table, so the documentation cannot drift from what is enforced. The sampler defaults (steps,
CFGScale, guidanceType) come from `sampling_params`, their one owner; the vocabularies from
`cantata.models.vocabulary`.

Order of checks (deterministic, so a client fixing one error at a time converges):
taskUUID, taskType, model; top-level keys (`CFGScale` on a turbo model first, then the first key
the model does not accept, in request order); inputs; positivePrompt, negativePrompt, duration,
seed, steps, CFGScale, strength, numberResults, outputType, outputFormat, audioSettings,
deliveryMethod, webhookURL, uploadEndpoint, includeCost, ttl; settings (key allow-list, then the
fields in `SETTINGS_KEYS` order); advancedFeatures; lora (item by item: keys, then the model's and
the weight's syntax, then the model in the registry). A rule between two fields runs when the later
of the two is read; `inputs` is read early because many rules depend on it.

Decisions where the Runware docs are silent (api.md marks these INF):

* JSON `null` means "not given", for every optional field and inside every object.
* Integer fields take JSON integers only: `true` and `5.0` are refused, as is `"5"` (except
  `settings.timeSignature`, which also takes "2", "3", "4", "6" as old clients send them).
* `positivePrompt` is 2..3000 characters, counting the minimum without surrounding whitespace.
  `negativePrompt` is at most 3000; an empty one counts as absent.
* `negativePrompt` needs CFGScale > 1: an absent CFGScale counts as the model default (7.0), so
  only an explicit CFGScale <= 1 conflicts.
* `CFGScale` is 1..30 (1 = no guidance; 30 is the largest value clients were seen to send).
* `seed` is 0..2**63-1; `strength`, `coverConditioningScale` and the CFG interval are 0..1.
* `duration` has at most one decimal (the 0.1 step), checked with a 1e-6 tolerance.
* `outputFormat` is case-insensitive ("mp3" -> "MP3"); all other enumerations are exact.
* `keyScale`: the note letter and accidental are exact (a lower-case "b" is the flat sign),
  the mode is case-insensitive ("C Major" -> "C major"); "" means automatic (None).
* `ttl` is capped by `Limits.max_ttl` (7 days, the usual lifetime of Runware output URLs).
* A repaint needs `repaintingStart` or `repaintingEnd`; a missing start is 0 and a missing end is
  the end of the source (None). `repaintingEnd` must be after the (possibly defaulted) start.
* `settings.task` (lego/extract/complete, base models only) wins over the repaint region when
  deriving `task_kind`: lego repaints a region too; extract and complete refuse a region.
* Cantata extensions are held to "no silently ignored field": repaintMode/repaintStrength need a
  repaint region, repaintStrength needs mode balanced, trackName needs lego/extract and
  trackClasses needs complete. On Runware's own fields we are no stricter than Runware.
* Turbo models accept the 8 settings keys Runware lists for turbo plus our extensions that apply
  without guidance (repaintMode, repaintStrength, dcw, the planner's); `allowedValues` lists them
  in that order.
* The planner's fields are read (type and range) before the server is asked whether it has a
  planner: `thinking: true` without one is unsupportedThinking, any other planner field
  unsupportedPlanner, as is a `planner` other than the served one.
* `advancedFeatures` (XL only) has no known contents, so any key inside it is refused.
* A string that is not valid Unicode (a lone UTF-16 surrogate such as "\\ud800", which JSON can
  escape) is refused with the field's own code: it could not be stored, rendered or encoded. An
  unknown key's name is echoed in `parameter` with such characters escaped, and a taskUUID is
  echoed only when it is valid Unicode, so an error object always encodes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

from cantata.api.errors import DEFAULT_DOCS_BASE, RunwareError, documentation_url
from cantata.audio import codecs
from cantata.jobs.task import AudioInferenceTask, AudioSettings, Inputs, LoraChoice, Settings
from cantata.limits import Limits
from cantata.models.variants import (
    COMPLETE, COVER, EXTRACT, LEGO, REPAINT, TEXT2MUSIC, VARIANTS, Variant, get_variant, sampling_params,
)
from cantata.planner import PLANNERS, SamplingSettings
from cantata.models.vocabulary import (
    DEFAULT_REPAINT_MODE, DEFAULT_VOCAL_LANGUAGE, GUIDANCE_TYPES, KEY_SCALES, REPAINT_MODES, TIME_SIGNATURES,
    TRACK_NAMES, VOCAL_LANGUAGES,
)

TASK_TYPE = "audioInference"
AIR_CHOICES: tuple[str, ...] = tuple(v.air for v in VARIANTS.values())

MAX_SEED = 2**63 - 1
MIN_DURATION = 30.0
DEFAULT_DURATION = 60.0
MIN_CFG_SCALE, MAX_CFG_SCALE = 1.0, 30.0
OUTPUT_TYPES = ("URL", "base64Data", "dataURI")
OUTPUT_FORMATS = codecs.FORMATS
LOSSY_FORMATS = ("MP3", "OGG")
DELIVERY_METHODS = ("sync", "async")
DEFAULT_SAMPLE_RATE = 48_000  # ACE-Step renders 48 kHz stereo
DEFAULT_CHANNELS = 2
MAX_REFERENCE_AUDIOS = 4
MAX_URL_CHARS = 2048
MAX_LORAS = 4
MIN_LORA_WEIGHT, MAX_LORA_WEIGHT = -4.0, 4.0  # Runware's own window for image LoRAs
PLANNER_DEFAULTS = SamplingSettings()  # the official planner sampling defaults (their one owner)
MAX_PLANNER_TEMPERATURE, MAX_PLANNER_CFG_SCALE, MAX_PLANNER_TOP_K = 2.0, 10.0, 1000
EXTRA_TASKS = (LEGO, EXTRACT, COMPLETE)
UUID4_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}"

_UUID4 = re.compile(UUID4_PATTERN)
_TIME_SIGNATURE_TEXT = {str(n): n for n in TIME_SIGNATURES}
_PYTHON_TYPES = {"string": str, "integer": int}


# -- the field table ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scope:
    """What a field's bounds, choices and default may depend on: the model, the server's limits and,
    for `audioSettings`, the output layout read before it."""

    variant: Variant
    limits: Limits = Limits()
    output_format: str = "MP3"
    sample_rate: int = DEFAULT_SAMPLE_RATE
    channels: int = DEFAULT_CHANNELS
    planner: str | None = None  # the planner the server serves (None: none)


#: A constant, or a function of the `Scope` for what depends on the model, the limits or the layout.
PerScope = Any


def _always(variant: Variant) -> bool:
    return True


def _guiding(variant: Variant) -> bool:
    return variant.guides


def _xl(variant: Variant) -> bool:
    return variant.xl


def _extra_tasks(variant: Variant) -> bool:
    return any(t in variant.tasks for t in EXTRA_TASKS)


def _stem_tasks(variant: Variant) -> bool:
    return LEGO in variant.tasks or EXTRACT in variant.tasks


def _complete_task(variant: Variant) -> bool:
    return COMPLETE in variant.tasks


@dataclass(frozen=True)
class FieldSpec:
    """Everything known about one `audioInference` field. The validator's readers take their
    bounds, choices, defaults and error codes from here, and the OpenAPI document is generated
    from the same table, so the two cannot disagree.

    `type` is the protocol's name (the `type` of an error): string, integer, float, boolean,
    object, string[] or object[] (a list of objects whose keys are the fields under its path).
    `minimum`/`maximum` bound numbers, or the length of strings (the minimum
    counted without surrounding whitespace) and lists. `default` is what an absent (or null) value
    becomes; `absent` says in words what leaving it out means when no single value does.
    """

    path: str
    type: str
    code: str
    description: str
    minimum: PerScope = None
    maximum: PerScope = None
    choices: PerScope = None
    default: PerScope = None
    absent: str = ""
    note: PerScope = ""  # unit or hint, appended to range messages in parentheses
    missing_code: str | None = None  # set for required fields
    accepts: Callable[[Variant], bool] = _always
    pattern: str | None = None
    extension: bool = False  # a Cantata extension, not in Runware's own protocol

    @property
    def key(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    def bounds(self, scope: Scope) -> tuple[Any, Any]:
        return _at(self.minimum, scope), _at(self.maximum, scope)

    def allowed(self, scope: Scope) -> tuple | None:
        return _at(self.choices, scope)

    def default_for(self, scope: Scope) -> Any:
        return _at(self.default, scope)

    def note_for(self, scope: Scope) -> str:
        return _at(self.note, scope)


def _at(value: PerScope, scope: Scope) -> Any:
    return value(scope) if callable(value) else value


def _default_steps(scope: Scope) -> int:
    return sampling_params(scope.variant).steps


def _default_cfg_scale(scope: Scope) -> float | None:
    return sampling_params(scope.variant).guidance_scale


def _default_guidance_type(scope: Scope) -> str:
    return sampling_params(scope.variant).guidance_type


def _extra_task_choices(scope: Scope) -> tuple[str, ...]:
    return tuple(t for t in EXTRA_TASKS if t in scope.variant.tasks)


def _bitrate_note(scope: Scope) -> str:
    return f"kbps for {scope.output_format} at {scope.sample_rate} Hz, {scope.channels} channel(s)"


_SOURCE_FORMS = "an http(s) URL, a data URI, base64 data, or the UUID of an upload or an earlier result"

#: Every `audioInference` field, top-level keys in the order `allowedValues` lists them, each
#: object's keys right after it in the same order.
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("taskType", "string", "invalidTaskType", "The task type.", choices=(TASK_TYPE,),
              missing_code="missingTaskType"),
    FieldSpec("taskUUID", "string", "invalidTaskUUID", "A UUID v4 chosen by the client, unique per task; "
              "results and errors echo it exactly as sent.", missing_code="missingTaskUUID", pattern=UUID4_PATTERN),
    FieldSpec("model", "string", "invalidModel", "The ACE-Step model (AIR); short names and Runware slugs "
              "are accepted too. The server serves those it was started with.", choices=AIR_CHOICES,
              missing_code="missingModel"),
    FieldSpec("positivePrompt", "string", "invalidPositivePrompt", "The caption: genre, instruments, mood, "
              "vocals.", minimum=2, maximum=lambda s: s.limits.max_prompt_chars, missing_code="missingPositivePrompt"),
    FieldSpec("negativePrompt", "string", "invalidNegativePrompt", "What to steer away from; needs CFGScale "
              "greater than 1 (an absent CFGScale counts as the model default). An empty one counts as absent.",
              minimum=0, maximum=lambda s: s.limits.max_prompt_chars, accepts=_guiding),
    FieldSpec("duration", "float", "invalidDurationNumber", "Length in seconds, in steps of 0.1. Not with "
              "inputs.audio: the source track sets the length.", minimum=MIN_DURATION,
              maximum=lambda s: s.limits.max_duration, default=lambda s: min(DEFAULT_DURATION, s.limits.max_duration),
              note="seconds"),
    FieldSpec("seed", "integer", "invalidSeed", "Result i of numberResults uses seed + i; every result "
              "echoes its own seed.", minimum=0, maximum=MAX_SEED, absent="a random seed, echoed in each result"),
    FieldSpec("steps", "integer", "invalidSteps", "Diffusion steps.", minimum=1,
              maximum=lambda s: s.variant.max_steps, default=_default_steps),
    FieldSpec("CFGScale", "float", "invalidCFGScale", "Guidance scale; 1 means no guidance. Not on turbo "
              "models (unsupportedCFGScaleForModel).", minimum=MIN_CFG_SCALE, maximum=MAX_CFG_SCALE,
              default=_default_cfg_scale, accepts=_guiding),
    FieldSpec("strength", "float", "invalidStrength", "Influence of inputs.audio (needs it): for a cover, "
              "sampling starts from the source noised to 1 - strength; no effect on other tasks.",
              minimum=0, maximum=1, absent="0: a cover starts from pure noise"),
    FieldSpec("numberResults", "integer", "invalidNumberResults", "Results to render, each with its own seed.",
              minimum=1, maximum=lambda s: s.limits.max_number_results, default=1),
    FieldSpec("outputType", "string", "invalidOutputType", "How results are delivered: a URL, base64 data "
              "or a data URI.", choices=OUTPUT_TYPES, default="URL"),
    FieldSpec("outputFormat", "string", "invalidOutputFormat", "Audio file format (case-insensitive).",
              choices=OUTPUT_FORMATS, default="MP3"),
    FieldSpec("audioSettings", "object", "invalidAudioSettings", "Encoding of MP3 and OGG output; leave it "
              "out for WAV and FLAC."),
    FieldSpec("audioSettings.sampleRate", "integer", "invalidSampleRate", "Output sample rate in Hz.",
              choices=lambda s: codecs.ALLOWED_SAMPLE_RATES[s.output_format], default=DEFAULT_SAMPLE_RATE,
              note=lambda s: f"Hz for {s.output_format}"),
    FieldSpec("audioSettings.bitrate", "integer", "invalidBitrate", "Bitrate in kbps, inside the window "
              "for the format, sample rate and channels.",
              minimum=lambda s: codecs.bitrate_window(s.output_format, s.sample_rate, s.channels)[0],
              maximum=lambda s: codecs.bitrate_window(s.output_format, s.sample_rate, s.channels)[1],
              default=lambda s: codecs.default_bitrate(s.output_format, s.sample_rate, s.channels),
              note=_bitrate_note),
    FieldSpec("audioSettings.channels", "integer", "invalidChannels", "Output channels.",
              choices=codecs.ALLOWED_CHANNELS, default=DEFAULT_CHANNELS),
    FieldSpec("deliveryMethod", "string", "invalidDeliveryMethod", "sync answers with the results; async "
              "acknowledges at once (poll getResponse).", choices=DELIVERY_METHODS, default="sync"),
    FieldSpec("webhookURL", "string", "invalidWebhookURL", "Receives one POST per finished result.",
              maximum=MAX_URL_CHARS),
    FieldSpec("uploadEndpoint", "string", "invalidUploadEndpoint", "Receives each result file by HTTP PUT.",
              maximum=MAX_URL_CHARS),
    FieldSpec("includeCost", "boolean", "invalidIncludeCost", "Add cost (USD) to each result.", default=False),
    FieldSpec("ttl", "integer", "invalidTTL", "How long a result URL lives, in seconds (outputType URL only).",
              minimum=lambda s: s.limits.min_ttl, maximum=lambda s: s.limits.max_ttl, note="seconds",
              absent="the server's result lifetime (the maximum)"),
    FieldSpec("inputs", "object", "invalidInputs", "Input audio."),
    FieldSpec("inputs.audio", "string", "invalidInputsAudio", f"Source track: {_SOURCE_FORMS}; any common "
              "format, decoded to 48 kHz stereo.", minimum=1),
    FieldSpec("inputs.referenceAudios", "string[]", "invalidReferenceAudios", "Timbre references, same "
              "forms as inputs.audio.", maximum=MAX_REFERENCE_AUDIOS, absent="none", extension=True),
    FieldSpec("settings", "object", "invalidSettings", "Model settings."),
    FieldSpec("settings.lyrics", "string", "invalidLyrics", "Lyrics; [Verse], [Chorus] … tags are plain text.",
              minimum=10, maximum=lambda s: s.limits.max_lyrics_chars, absent="instrumental / improvised"),
    FieldSpec("settings.bpm", "integer", "invalidBpm", "Tempo.", minimum=30, maximum=300,
              absent="the model decides"),
    FieldSpec("settings.keyScale", "string", "invalidKeyScale", "'<Note><accidental> <mode>': note A-G and "
              "accidental exact, mode case-insensitive; '' lets the model decide.", choices=KEY_SCALES,
              absent="the model decides"),
    FieldSpec("settings.timeSignature", "integer", "invalidTimeSignature", "Beats per bar (the strings "
              "'2', '3', '4', '6' are accepted too).", choices=TIME_SIGNATURES, absent="the model decides"),
    FieldSpec("settings.vocalLanguage", "string", "invalidVocalLanguage", "Vocal language code; 'unknown' "
              "for instrumentals.", choices=VOCAL_LANGUAGES, default=DEFAULT_VOCAL_LANGUAGE),
    FieldSpec("settings.guidanceType", "string", "invalidGuidanceType", "apg (adaptive projected guidance, "
              "the official default) or cfg (plain classifier-free guidance).", choices=GUIDANCE_TYPES,
              default=_default_guidance_type, accepts=_guiding),
    FieldSpec("settings.cfgIntervalStart", "float", "invalidCfgInterval", "Guidance acts where start <= t "
              "<= end, t = 1 being noise.", minimum=0, maximum=1, default=0.0, accepts=_guiding),
    FieldSpec("settings.cfgIntervalEnd", "float", "invalidCfgInterval", "End of the guidance interval, not "
              "below its start.", minimum=0, maximum=1, default=1.0, accepts=_guiding),
    FieldSpec("settings.coverConditioningScale", "float", "invalidCoverConditioningScale", "Fraction of the "
              "steps conditioned on the source's structure (needs inputs.audio), then free text-to-music.",
              minimum=0, maximum=1, default=1.0),
    FieldSpec("settings.repaintingStart", "float", "invalidRepaintingStart", "Start of the region to "
              "regenerate (needs inputs.audio); negative outpaints before the source.", minimum=-300, maximum=300,
              default=0.0, note="seconds; negative prepends"),
    FieldSpec("settings.repaintingEnd", "float", "invalidRepaintingEnd", "End of the region to regenerate "
              "(needs inputs.audio), after its start; past the source outpaints after it.", minimum=0, maximum=300,
              note="seconds", absent="the end of the source"),
    FieldSpec("settings.repaintMode", "string", "invalidRepaintMode", "How strictly a repaint keeps the "
              "audio outside its region (needs a region).", choices=REPAINT_MODES, default=DEFAULT_REPAINT_MODE,
              extension=True),
    FieldSpec("settings.repaintStrength", "float", "invalidRepaintStrength", "repaintMode balanced only: 0 "
              "keeps the most of the source, 1 the least (needs a region).", minimum=0, maximum=1, default=0.5,
              extension=True),
    FieldSpec("settings.dcw", "boolean", "invalidDcw", "The DCW wavelet correction of the upstream sampler.",
              default=False, extension=True),
    FieldSpec("settings.thinking", "boolean", "invalidThinking", "Text-to-music: the 5 Hz LM planner writes "
              "audio codes that guide the DiT (lyric adherence, structure). Needs a server with a planner "
              "(unsupportedThinking otherwise; /ready names it). Missing bpm, keyScale and timeSignature are "
              "completed by the planner whenever the server has one; the user's values always win.",
              default=False, extension=True),
    FieldSpec("settings.planner", "string", "invalidPlanner", "The planner expected: it must be the one "
              "this server serves (unsupportedPlanner otherwise).", choices=tuple(PLANNERS),
              absent="the served planner", extension=True),
    FieldSpec("settings.plannerTemperature", "float", "invalidPlannerTemperature", "Planner sampling "
              "temperature; 0 is greedy.", minimum=0, maximum=MAX_PLANNER_TEMPERATURE,
              default=PLANNER_DEFAULTS.temperature, extension=True),
    FieldSpec("settings.plannerCFGScale", "float", "invalidPlannerCFGScale", "Guidance of the planner's audio "
              "codes; 1 turns it off.", minimum=1, maximum=MAX_PLANNER_CFG_SCALE,
              default=PLANNER_DEFAULTS.cfg_scale, extension=True),
    FieldSpec("settings.plannerTopK", "integer", "invalidPlannerTopK", "Planner top-k; 0 turns it off.",
              minimum=0, maximum=MAX_PLANNER_TOP_K, absent="off", extension=True),
    FieldSpec("settings.plannerTopP", "float", "invalidPlannerTopP", "Planner nucleus sampling; 1 turns it "
              "off.", minimum=0, maximum=1, default=PLANNER_DEFAULTS.top_p, extension=True),
    FieldSpec("settings.rewriteCaption", "boolean", "invalidRewriteCaption", "Let the planner write the "
              "caption the DiT sees instead of positivePrompt (the official default; Cantata's is off).",
              default=False, extension=True),
    FieldSpec("settings.task", "string", "invalidTask", "Base models, needs inputs.audio: lego adds a track, "
              "extract separates a stem, complete accompanies a part.", choices=_extra_task_choices,
              absent="from the inputs: repaint with a region, else cover", accepts=_extra_tasks, extension=True),
    FieldSpec("settings.trackName", "string", "invalidTrackName", "The stem for task lego or extract.",
              choices=TRACK_NAMES, missing_code="missingTrackName", accepts=_stem_tasks, extension=True),
    FieldSpec("settings.trackClasses", "string[]", "invalidTrackClasses", "Distinct stems to add, for task "
              "complete.", choices=TRACK_NAMES, missing_code="missingTrackClasses", accepts=_complete_task,
              extension=True),
    FieldSpec("advancedFeatures", "object", "invalidAdvancedFeatures", "XL models; no keys are known, so any "
              "key inside is refused.", accepts=_xl),
    FieldSpec("lora", "object[]", "invalidLora", "Adapters (LoRA or LoKr) installed on this server (listed by "
              "modelSearch, category lora), summed with their weights; each names a different adapter. "
              "An empty list, or every weight 0, is the base model bit for bit.", maximum=MAX_LORAS,
              absent="the base model", extension=True),
    FieldSpec("lora.model", "string", "invalidLoraModel", "The adapter's name or AIR; it must have been "
              "installed for the requested model's architecture (XL or 2B).", minimum=1, extension=True),
    FieldSpec("lora.weight", "float", "invalidLoraWeight", "Strength: the adapter's own scale (alpha / r) times "
              "this; negative values subtract it.", minimum=MIN_LORA_WEIGHT, maximum=MAX_LORA_WEIGHT, default=1.0,
              extension=True),
)

FIELD: dict[str, FieldSpec] = {f.path: f for f in FIELDS}


def _keys_of(obj: str) -> tuple[tuple[str, Callable[[Variant], bool]], ...]:
    return tuple((f.key, f.accepts) for f in FIELDS if f.path.rpartition(".")[0] == obj)


#: Top-level keys, in the order `allowedValues` lists them, and which models accept them.
TOP_LEVEL_KEYS = _keys_of("")
#: `settings` keys, in reading (and `allowedValues`) order, and which models accept them. Runware's turbo
#: allow-list comes first in Runware's order; the rest are Cantata extensions or need guidance.
SETTINGS_KEYS = _keys_of("settings")
INPUTS_KEYS = tuple(key for key, _ in _keys_of("inputs"))
AUDIO_SETTINGS_KEYS = tuple(key for key, _ in _keys_of("audioSettings"))


class LoraLookup(Protocol):
    """Where `lora[i].model` is looked up (`cantata.models.adapters.registry.LoraRegistry`):
    `find` returns an entry with `name`, `path`, `base` and `fits(variant)`, or None."""

    def find(self, name_or_air: str) -> Any: ...


class _NoLoras:
    def find(self, name_or_air: str) -> None:
        return None


def validate_audio_inference(
    task: Any, *, docs_base: str = DEFAULT_DOCS_BASE, limits: Limits = Limits(), loras: LoraLookup = _NoLoras(),
    planner: str | None = None,
) -> AudioInferenceTask:
    """Validate one `audioInference` task object; raise the first `RunwareError` found, with
    taskType, taskUUID (when the client sent a string it can match the error with) and a link
    into our docs filled in. `lora[i].model` is looked up in `loras` (none installed by default);
    `planner` is the planner the server serves (None: none)."""
    try:
        return _validate(task, limits, loras, planner)
    except RunwareError as err:
        uuid = task.get("taskUUID") if isinstance(task, dict) else None
        err.task_type = TASK_TYPE
        err.task_uuid = uuid if isinstance(uuid, str) and len(uuid) <= 100 and is_unicode(uuid) else None
        err.documentation = documentation_url(err.parameter, docs_base)
        raise


def validate_task_uuid(value: Any) -> str:
    """The taskUUID as sent (not re-cased: clients match replies on the exact string)."""
    spec = FIELD["taskUUID"]
    if value is None:
        raise RunwareError(spec.missing_code, "taskUUID is required: a UUID v4 string unique per task.",
                           parameter=spec.path, type=spec.type)
    if not isinstance(value, str) or not _UUID4.fullmatch(value):
        raise RunwareError(spec.code, "taskUUID must be a UUID v4 string, e.g. "
                           "'a770f077-f413-47de-9dac-be0b26a35da6'.", parameter=spec.path, type=spec.type)
    return value


def allowed_settings_keys(variant: Variant) -> tuple[str, ...]:
    """The `settings` keys `variant` accepts, in the order `allowedValues` lists them."""
    return tuple(key for key, accepts in SETTINGS_KEYS if accepts(variant))


def is_unicode(text: str) -> bool:
    """False for a string holding a lone UTF-16 surrogate ("\\ud800" is a legal JSON escape):
    it cannot be encoded, so it could neither be stored, rendered nor fed to the text encoder."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _validate(task: Any, limits: Limits, loras: LoraLookup, planner: str | None = None) -> AudioInferenceTask:
    if not isinstance(task, dict):
        raise RunwareError("invalidTaskObject", "Each task must be a JSON object.")
    task_uuid = validate_task_uuid(task.get("taskUUID"))
    _task_type(task.get("taskType"))
    variant = _variant(task.get("model"))
    scope = Scope(variant, limits, planner=planner)
    _top_level_keys(task, variant)
    inputs = _inputs(task.get("inputs"), variant.air)
    source = inputs.audio

    prompt = _text(task.get("positivePrompt"), FIELD["positivePrompt"], scope)
    if prompt is None:
        spec = FIELD["positivePrompt"]
        lo, hi = spec.bounds(scope)
        raise RunwareError(spec.missing_code, f"positivePrompt is required: a string of {lo} to {hi} characters.",
                           parameter=spec.path, type=spec.type)
    negative = _text(task.get("negativePrompt"), FIELD["negativePrompt"], scope)
    negative = negative if negative and negative.strip() else None
    duration = _duration(task.get("duration"), scope)
    if duration is not None and source is not None:
        raise _conflict("duration", "inputs.audio", "duration cannot be used with inputs.audio: "
                        "the source track sets the length.")
    seed = _integer(task.get("seed"), FIELD["seed"], scope)
    steps = _integer(task.get("steps"), FIELD["steps"], scope)
    cfg_scale = _number(task.get("CFGScale"), FIELD["CFGScale"], scope)
    if negative is not None and cfg_scale is not None and cfg_scale <= 1:
        raise _conflict("negativePrompt", "CFGScale", "negativePrompt needs CFGScale greater than 1 "
                        "(leave CFGScale out to use the model default).")
    strength = _number(task.get("strength"), FIELD["strength"], scope)
    _needs_source("strength", strength, source)
    number_results = _integer(task.get("numberResults"), FIELD["numberResults"], scope)
    output_type = _filled(_choice(task.get("outputType"), FIELD["outputType"], scope), FIELD["outputType"], scope)
    output_format = _filled(_choice(task.get("outputFormat"), FIELD["outputFormat"], scope, normalize=str.upper),
                            FIELD["outputFormat"], scope)
    audio_settings = _audio_settings(task.get("audioSettings"), replace(scope, output_format=output_format))
    delivery = _choice(task.get("deliveryMethod"), FIELD["deliveryMethod"], scope)
    webhook_url = _url(task.get("webhookURL"), FIELD["webhookURL"])
    upload_endpoint = _url(task.get("uploadEndpoint"), FIELD["uploadEndpoint"])
    include_cost = _boolean(task.get("includeCost"), FIELD["includeCost"])
    ttl = _integer(task.get("ttl"), FIELD["ttl"], scope)
    if ttl is not None and output_type != "URL":
        raise _conflict("ttl", "outputType", "ttl only applies to outputType URL.")
    settings = _settings(task.get("settings"), scope, source)
    _object(task.get("advancedFeatures"), FIELD["advancedFeatures"], (), variant.air)
    lora = _loras(task.get("lora"), scope, loras)

    if source is None:
        kind = TEXT2MUSIC
        duration = _filled(duration, FIELD["duration"], scope)
    elif settings.task is not None:
        kind = settings.task
    else:
        kind = REPAINT if settings.repainting_start is not None else COVER
    sampling = sampling_params(variant, steps=steps, guidance_scale=cfg_scale)
    return AudioInferenceTask(
        task_uuid=task_uuid,
        variant=variant,
        task_kind=kind,
        positive_prompt=prompt,
        negative_prompt=negative,
        duration=duration,
        seed=seed,
        steps=sampling.steps,
        cfg_scale=sampling.guidance_scale,
        strength=strength,
        number_results=_filled(number_results, FIELD["numberResults"], scope),
        output_type=output_type,
        output_format=output_format,
        audio_settings=audio_settings,
        delivery_method=_filled(delivery, FIELD["deliveryMethod"], scope),
        webhook_url=webhook_url,
        upload_endpoint=upload_endpoint,
        include_cost=_filled(include_cost, FIELD["includeCost"], scope),
        ttl=ttl,
        inputs=inputs,
        settings=settings,
        loras=lora,
    )


# -- the steps -----------------------------------------------------------------------------------

def _task_type(value: Any) -> None:
    spec = FIELD["taskType"]
    if value is None:
        raise RunwareError(spec.missing_code, "taskType is required.", parameter=spec.path, type=spec.type)
    if value not in spec.choices:
        raise RunwareError(spec.code, f"taskType must be '{TASK_TYPE}'.", parameter=spec.path,
                           type=spec.type, allowed_values=_quoted(spec.choices))


def _variant(value: Any) -> Variant:
    spec = FIELD["model"]
    if value is None:
        raise RunwareError(spec.missing_code, "model is required: one of the ACE-Step AIRs.",
                           parameter=spec.path, type=spec.type, allowed_values=_quoted(spec.choices))
    if isinstance(value, str):
        try:
            return get_variant(value)
        except KeyError:
            pass
    raise RunwareError(spec.code, f"model must be one of: {', '.join(spec.choices)}.",
                       parameter=spec.path, type=spec.type, allowed_values=_quoted(spec.choices))


def _top_level_keys(task: dict, variant: Variant) -> None:
    if not variant.guides and task.get("CFGScale") is not None:
        raise RunwareError("unsupportedCFGScaleForModel", f"{variant.air} is a turbo model and runs "
                           "without classifier-free guidance: leave CFGScale out.",
                           parameter="CFGScale", type=FIELD["CFGScale"].type)
    _check_keys(task, tuple(key for key, accepts in TOP_LEVEL_KEYS if accepts(variant)), "", variant.air)


def _inputs(raw: Any, air: str) -> Inputs:
    obj = _object(raw, FIELD["inputs"], INPUTS_KEYS, air)
    spec = FIELD["inputs.audio"]
    audio = obj.get("audio")
    if audio is not None and not _is_text(audio):
        raise RunwareError(spec.code, "inputs.audio must be a non-empty string: a URL, a "
                           "data URI, base64 data or a media UUID.", parameter=spec.path, type=spec.type)
    spec = FIELD["inputs.referenceAudios"]
    refs = _default(obj.get("referenceAudios"), [])
    if not (isinstance(refs, list) and len(refs) <= spec.maximum and all(_is_text(r) for r in refs)):
        raise RunwareError(spec.code, "inputs.referenceAudios must be a list of at most "
                           f"{spec.maximum} non-empty strings (URL, data URI, base64 or media UUID).",
                           parameter=spec.path, type=spec.type)
    return Inputs(audio=audio, reference_audios=tuple(refs))


def _is_text(value: Any) -> bool:
    """A non-blank, encodable string: what every source-audio reference must be."""
    return isinstance(value, str) and bool(value.strip()) and is_unicode(value)


def _duration(value: Any, scope: Scope) -> float | None:
    spec = FIELD["duration"]
    duration = _number(value, spec, scope)
    if duration is None:
        return None
    if abs(duration * 10 - round(duration * 10)) > 1e-6:
        raise RunwareError(spec.code, "duration must be a multiple of 0.1 seconds "
                           "(at most one decimal).", parameter=spec.path, type=spec.type)
    return round(duration, 1)


def _audio_settings(raw: Any, scope: Scope) -> AudioSettings | None:
    """Bitrate and sample rate only exist for lossy formats; their windows live in the codecs
    module so that what we accept is what the encoder can do."""
    obj = _object(raw, FIELD["audioSettings"], AUDIO_SETTINGS_KEYS, scope.variant.air)
    if scope.output_format not in LOSSY_FORMATS:
        if any(v is not None for v in obj.values()):
            raise _conflict("audioSettings", "outputFormat", "audioSettings applies only to MP3 and OGG "
                            "output; leave it out for WAV and FLAC.")
        return None
    rate_spec, channels_spec = FIELD["audioSettings.sampleRate"], FIELD["audioSettings.channels"]
    rate = _filled(_choice(obj.get("sampleRate"), rate_spec, scope), rate_spec, scope)
    channels = _filled(_choice(obj.get("channels"), channels_spec, scope), channels_spec, scope)
    scope = replace(scope, sample_rate=rate, channels=channels)
    bitrate_spec = FIELD["audioSettings.bitrate"]
    bitrate = _integer(obj.get("bitrate"), bitrate_spec, scope)
    return AudioSettings(sample_rate=rate, bitrate=_filled(bitrate, bitrate_spec, scope), channels=channels)


def _settings(raw: Any, scope: Scope, source: str | None) -> Settings:
    variant = scope.variant
    s = _object(raw, FIELD["settings"], allowed_settings_keys(variant), variant.air)

    def read(reader: Callable[..., Any], key: str, **kw: Any) -> Any:
        return reader(s.get(key), FIELD[f"settings.{key}"], scope, **kw)

    def filled(value: Any, key: str) -> Any:
        return _filled(value, FIELD[f"settings.{key}"], scope)

    lyrics = read(_text, "lyrics")
    bpm = read(_integer, "bpm")
    key_scale = _key_scale(s.get("keyScale"))
    time_signature = read(_choice, "timeSignature", normalize=lambda t: _TIME_SIGNATURE_TEXT.get(t, t))
    language = read(_choice, "vocalLanguage")
    guidance = read(_choice, "guidanceType")
    cfg_start = filled(read(_number, "cfgIntervalStart"), "cfgIntervalStart")
    cfg_end = filled(read(_number, "cfgIntervalEnd"), "cfgIntervalEnd")
    if cfg_start > cfg_end:
        raise RunwareError(FIELD["settings.cfgIntervalStart"].code, "settings.cfgIntervalStart must not be "
                           "greater than settings.cfgIntervalEnd.", parameter=["settings.cfgIntervalStart",
                                                                              "settings.cfgIntervalEnd"], type="float")
    cover = read(_number, "coverConditioningScale")
    _needs_source("settings.coverConditioningScale", cover, source)

    start = read(_number, "repaintingStart")
    _needs_source("settings.repaintingStart", start, source)
    end = read(_number, "repaintingEnd")
    _needs_source("settings.repaintingEnd", end, source)
    if end is not None and end <= filled(start, "repaintingStart"):
        raise RunwareError(FIELD["settings.repaintingEnd"].code, "settings.repaintingEnd must be greater than "
                           "settings.repaintingStart (0 when left out).", parameter="settings.repaintingEnd",
                           type="float")
    region = start is not None or end is not None
    region_key = "settings.repaintingStart" if start is not None else "settings.repaintingEnd"

    mode = read(_choice, "repaintMode")
    repaint_strength = read(_number, "repaintStrength")
    for key, value in (("settings.repaintMode", mode), ("settings.repaintStrength", repaint_strength)):
        if value is not None and not region:
            raise RunwareError("missingRepaintingRange", f"{key} only applies to a repaint: also send "
                               "settings.repaintingStart and/or settings.repaintingEnd.",
                               parameter=[key, "settings.repaintingStart", "settings.repaintingEnd"])
    if repaint_strength is not None and mode not in (None, "balanced"):
        raise _conflict("settings.repaintStrength", "settings.repaintMode",
                        "settings.repaintStrength only applies to repaintMode 'balanced'.")

    task = read(_choice, "task")
    _needs_source("settings.task", task, source)
    if task in (EXTRACT, COMPLETE) and region:
        raise _conflict("settings.task", region_key, f"settings.task '{task}' works on the whole source "
                        "track and takes no repainting region.")
    track_name = read(_choice, "trackName")
    if task in (LEGO, EXTRACT) and track_name is None:
        spec = FIELD["settings.trackName"]
        raise RunwareError(spec.missing_code, f"settings.task '{task}' needs settings.trackName.",
                           parameter=spec.path, type=spec.type, allowed_values=_quoted(spec.choices))
    if track_name is not None and task not in (LEGO, EXTRACT):
        raise _conflict("settings.trackName", "settings.task",
                        "settings.trackName only applies to settings.task 'lego' or 'extract'.")
    track_classes = _track_classes(s.get("trackClasses"))
    if task == COMPLETE and not track_classes:
        spec = FIELD["settings.trackClasses"]
        raise RunwareError(spec.missing_code, "settings.task 'complete' needs settings.trackClasses.",
                           parameter=spec.path, type=spec.type, allowed_values=_quoted(spec.choices))
    if track_classes and task != COMPLETE:
        raise _conflict("settings.trackClasses", "settings.task",
                        "settings.trackClasses only applies to settings.task 'complete'.")
    dcw = _boolean(s.get("dcw"), FIELD["settings.dcw"])
    thinking = filled(_boolean(s.get("thinking"), FIELD["settings.thinking"]), "thinking")
    if thinking and source is not None:
        raise _conflict("settings.thinking", "inputs.audio", "settings.thinking applies to text-to-music: "
                        "with inputs.audio the source track guides the structure.")
    if thinking and scope.planner is None:
        raise RunwareError("unsupportedThinking", "settings.thinking needs the 5 Hz LM planner, and this server "
                           "has none (start it with a planner: `cantata serve --planner 1.7B`).",
                           parameter="settings.thinking", type="boolean")
    planner_name = read(_choice, "planner", normalize=lambda t: next((p for p in PLANNERS if p.lower() == t.lower()), t))
    temperature = filled(read(_number, "plannerTemperature"), "plannerTemperature")
    planner_cfg = filled(read(_number, "plannerCFGScale"), "plannerCFGScale")
    top_k = read(_integer, "plannerTopK")
    top_p = filled(read(_number, "plannerTopP"), "plannerTopP")
    rewrite = filled(_boolean(s.get("rewriteCaption"), FIELD["settings.rewriteCaption"]), "rewriteCaption")
    planner_fields = [k for k in ("planner", "plannerTemperature", "plannerCFGScale", "plannerTopK", "plannerTopP",
                                  "rewriteCaption") if s.get(k) is not None]
    if planner_fields and scope.planner is None:
        raise RunwareError("unsupportedPlanner", f"settings.{planner_fields[0]} configures the 5 Hz LM planner, "
                           "and this server has none.", parameter=f"settings.{planner_fields[0]}")
    if planner_name is not None and planner_name != scope.planner:
        raise RunwareError("unsupportedPlanner", f"settings.planner is {planner_name!r}, but this server serves "
                           f"the {scope.planner} planner.", parameter="settings.planner", type="string",
                           allowed_values=_quoted((scope.planner,)))

    return Settings(
        lyrics=lyrics,
        bpm=bpm,
        key_scale=key_scale,
        time_signature=time_signature,
        vocal_language=filled(language, "vocalLanguage"),
        guidance_type=sampling_params(variant, guidance_type=guidance).guidance_type,
        cfg_interval_start=cfg_start,
        cfg_interval_end=cfg_end,
        cover_conditioning_scale=filled(cover, "coverConditioningScale"),
        repainting_start=filled(start, "repaintingStart") if region else None,
        repainting_end=end,
        repaint_mode=filled(mode, "repaintMode"),
        repaint_strength=filled(repaint_strength, "repaintStrength"),
        task=task,
        track_name=track_name,
        track_classes=track_classes,
        dcw=filled(dcw, "dcw"),
        thinking=thinking,
        planner=planner_name,
        planner_temperature=temperature,
        planner_cfg_scale=planner_cfg,
        planner_top_k=top_k or None,
        planner_top_p=top_p,
        rewrite_caption=rewrite,
    )


def _loras(raw: Any, scope: Scope, registry: LoraLookup) -> tuple[LoraChoice, ...]:
    """`lora`: Runware's image-API shape, `[{"model": name or AIR, "weight": w}, ...]`; each model
    resolved against the registry now, so a queued task keeps the adapter it was accepted with."""
    spec, model_spec, weight_spec = FIELD["lora"], FIELD["lora.model"], FIELD["lora.weight"]
    items = _default(raw, [])
    if not isinstance(items, list) or len(items) > spec.maximum:
        raise RunwareError(spec.code, f"lora must be a list of at most {spec.maximum} objects "
                           "{\"model\": <adapter name or AIR>, \"weight\": <number>}.", parameter=spec.path,
                           type="object[]")
    choices: list[LoraChoice] = []
    for i, item in enumerate(items):
        where = f"lora[{i}]"
        if not isinstance(item, dict):
            raise RunwareError(spec.code, f"{where} must be an object {{\"model\": ..., \"weight\": ...}}.",
                               parameter=where, type="object")
        _check_keys(item, tuple(f.key for f in (model_spec, weight_spec)), f"{where}.", scope.variant.air)
        name = item.get("model")
        if not (isinstance(name, str) and name.strip() and is_unicode(name)):
            raise RunwareError(model_spec.code, f"{where}.model must be the name or AIR of an installed adapter "
                               "(see modelSearch with category 'lora').", parameter=f"{where}.model", type="string")
        weight = _number(item.get("weight"), replace(weight_spec, path=f"{where}.weight"), scope)
        entry = registry.find(name)
        if entry is None:
            raise RunwareError(model_spec.code, f"{where}.model: no adapter named {_escaped(name)!r} is installed "
                               "on this server (see modelSearch with category 'lora').",
                               parameter=f"{where}.model", type="string")
        if not entry.fits(scope.variant):
            raise RunwareError(model_spec.code, f"{where}.model: adapter {entry.name!r} was made for {entry.base}, "
                               f"whose shapes differ from {scope.variant.air}'s.", parameter=f"{where}.model",
                               type="string")
        if any(c.name == entry.name for c in choices):
            raise RunwareError(spec.code, f"{where}.model: adapter {entry.name!r} is listed twice; give it one "
                               "weight.", parameter=f"{where}.model", type="string")
        choices.append(LoraChoice(entry.name, str(entry.path), _filled(weight, weight_spec, scope)))
    return tuple(choices)


def _key_scale(value: Any) -> str | None:
    spec = FIELD["settings.keyScale"]
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    parts = value.split() if isinstance(value, str) else ()
    canonical = f"{parts[0]} {parts[1].lower()}" if len(parts) == 2 else None
    if canonical not in spec.choices:
        raise RunwareError(spec.code, "settings.keyScale must be '<Note><accidental> <major|minor>' "
                           "with Note A-G and accidental none, '#', 'b', '♯' or '♭' (e.g. 'F# minor'), "
                           "or '' to let the model decide.", parameter=spec.path, type=spec.type,
                           allowed_values=_quoted(spec.choices))
    return canonical


def _track_classes(value: Any) -> tuple[str, ...]:
    spec = FIELD["settings.trackClasses"]
    classes = _default(value, [])
    if not (isinstance(classes, list) and all(isinstance(c, str) and c in spec.choices for c in classes)
            and len(set(classes)) == len(classes)):
        raise RunwareError(spec.code, "settings.trackClasses must be a list of distinct stem "
                           f"names from: {', '.join(spec.choices)}.", parameter=spec.path,
                           type=spec.type, allowed_values=_quoted(spec.choices))
    return tuple(classes)


# -- readers: each takes its field's spec and returns None for an absent (or null) value -------------

def _integer(value: Any, spec: FieldSpec, scope: Scope) -> int | None:
    if value is None:
        return None
    lo, hi = spec.bounds(scope)
    if type(value) is not int or not lo <= value <= hi:  # type(): bool is an int subclass
        raise RunwareError(spec.code, f"{spec.path} must be an integer between {lo} and {hi}"
                           f"{_paren(spec.note_for(scope))}.", parameter=spec.path, type="integer")
    return value


def _number(value: Any, spec: FieldSpec, scope: Scope) -> float | None:
    if value is None:
        return None
    lo, hi = spec.bounds(scope)
    if type(value) not in (int, float) or not lo <= value <= hi:  # NaN fails the comparison
        raise RunwareError(spec.code, f"{spec.path} must be a number between {_fmt(lo)} and {_fmt(hi)}"
                           f"{_paren(spec.note_for(scope))}.", parameter=spec.path, type="float")
    return float(value)


def _text(value: Any, spec: FieldSpec, scope: Scope) -> str | None:
    if value is None:
        return None
    lo, hi = spec.bounds(scope)
    if not isinstance(value, str) or len(value.strip()) < lo or len(value) > hi or not is_unicode(value):
        raise RunwareError(spec.code, f"{spec.path} must be a string of {lo} to {hi} characters.",
                           parameter=spec.path, type="string")
    return value


def _boolean(value: Any, spec: FieldSpec) -> bool | None:
    if value is not None and type(value) is not bool:
        raise RunwareError(spec.code, f"{spec.path} must be true or false.", parameter=spec.path, type="boolean")
    return value


def _choice(value: Any, spec: FieldSpec, scope: Scope, *, normalize: Callable[[str], Any] | None = None) -> Any:
    """One of the field's choices; the error's `type` is the field's (string or integer)."""
    if value is None:
        return None
    choices = spec.allowed(scope)
    if normalize is not None and isinstance(value, str):
        value = normalize(value)
    if type(value) is not _PYTHON_TYPES[spec.type] or value not in choices:
        listed = ", ".join(map(str, choices)) if len(choices) <= 12 else "the values in allowedValues"
        raise RunwareError(spec.code, f"{spec.path} must be one of {listed}{_paren(spec.note_for(scope))}.",
                           parameter=spec.path, type=spec.type, allowed_values=_quoted(choices))
    return value


def _url(value: Any, spec: FieldSpec) -> str | None:
    """Syntax only: where the URL points (SSRF rules) is checked where it is used."""
    if value is None:
        return None
    try:
        ok = (isinstance(value, str) and len(value) <= spec.maximum and value.isprintable() and " " not in value
              and is_unicode(value))
        parts = urlsplit(value) if ok else None
        ok = ok and parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        ok = ok and (parts.port is None or parts.port > 0)  # .port raises on a bad port
    except ValueError:
        ok = False
    if not ok:
        raise RunwareError(spec.code, f"{spec.path} must be an absolute http:// or https:// URL.",
                           parameter=spec.path, type="string")
    return value


def _object(value: Any, spec: FieldSpec, allowed: tuple[str, ...], air: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RunwareError(spec.code, f"{spec.path} must be an object.", parameter=spec.path, type="object")
    _check_keys(value, allowed, f"{spec.path}.", air)
    return value


def _check_keys(obj: dict, allowed: tuple[str, ...], prefix: str, air: str) -> None:
    for key, value in obj.items():
        if value is not None and key not in allowed:
            path = f"{prefix}{_escaped(key)}"
            raise RunwareError("unsupportedParameter", f"'{path}' is not a supported parameter for {air}.",
                               parameter=path, allowed_values=_quoted(allowed) or None)


def _escaped(key: str) -> str:
    """A key as it can be echoed: lone surrogates written as `\\udXXX` escapes, the rest as sent."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def _needs_source(path: str, value: Any, source: str | None) -> None:
    if value is not None and source is None:
        raise RunwareError("missingInputsAudio", f"{path} transforms a source track: also send inputs.audio.",
                           parameter=[path, "inputs.audio"])


def _conflict(first: str, second: str, message: str) -> RunwareError:
    return RunwareError("conflictingParameters", message, parameter=[first, second])


def _filled(value: Any, spec: FieldSpec, scope: Scope) -> Any:
    """`value`, or the field's default when it is absent."""
    return spec.default_for(scope) if value is None else value


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def _quoted(values: Sequence) -> str:
    """Runware's allowedValues style: "'a','b','c'"."""
    return ",".join(f"'{v}'" for v in values)


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _paren(note: str) -> str:
    return f" ({note})" if note else ""
