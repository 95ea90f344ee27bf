"""Validation of Runware `audioInference` tasks for the ACE-Step models (docs: api.md §1-§3, §8).

Plain JSON in; a frozen, fully defaulted `AudioInferenceTask` or the first `RunwareError` out.
Nothing else is ever raised, whatever the JSON holds, so the transports can turn any failure into
an `errors[]` item without a catch-all.

Order of checks (deterministic, so a client fixing one error at a time converges):
taskUUID, taskType, model; top-level keys (`CFGScale` on a turbo model first, then the first key
the model does not accept, in request order); inputs; positivePrompt, negativePrompt, duration,
seed, steps, CFGScale, strength, numberResults, outputType, outputFormat, audioSettings,
deliveryMethod, webhookURL, uploadEndpoint, includeCost, ttl; settings (key allow-list, then the
fields in `SETTINGS_KEYS` order); advancedFeatures. A rule between two fields runs when the later
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
  without guidance (repaintMode, repaintStrength, dcw); `allowedValues` lists them in that order.
* `advancedFeatures` (XL only) has no known contents, so any key inside it is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cantata.api.errors import DEFAULT_DOCS_BASE, RunwareError, documentation_url
from cantata.audio import codecs
from cantata.jobs.task import AudioInferenceTask, AudioSettings, Inputs, Settings
from cantata.models.variants import (
    COMPLETE, COVER, EXTRACT, LEGO, REPAINT, TEXT2MUSIC, VARIANTS, Variant, get_variant,
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
GUIDANCE_TYPES = ("apg", "cfg")
TIME_SIGNATURES = (2, 3, 4, 6)
REPAINT_MODES = ("conservative", "balanced", "aggressive")
EXTRA_TASKS = (LEGO, EXTRACT, COMPLETE)
TRACK_NAMES = (
    "woodwinds", "brass", "fx", "synth", "strings", "percussion",
    "keyboard", "guitar", "bass", "drums", "backing_vocals", "vocals",
)
VOCAL_LANGUAGES = tuple(
    "ar az bg bn ca cs da de el en es fa fi fr he hi hr ht hu id is it ja ko la lt ms ne nl no "
    "pa pl pt ro ru sa sk sr sv sw ta te th tl tr uk ur vi yue zh unknown".split()
)
#: The 70 "<Note><accidental> <mode>" strings of api.md §2.2, in its order.
KEY_SCALES = tuple(
    f"{note}{acc} {mode}"
    for note in "ABCDEFG" for acc in ("", "#", "b", "♯", "♭") for mode in ("major", "minor")
)

_UUID4 = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}")
_TIME_SIGNATURE_TEXT = {str(n): n for n in TIME_SIGNATURES}
_PYTHON_TYPES = {"string": str, "integer": int}


def _always(variant: Variant) -> bool:
    return True


def _guided(variant: Variant) -> bool:
    return not variant.turbo


#: Top-level keys, in the order `allowedValues` lists them, and which models accept them.
TOP_LEVEL_KEYS: tuple[tuple[str, Callable[[Variant], bool]], ...] = (
    ("taskType", _always), ("taskUUID", _always), ("model", _always), ("positivePrompt", _always),
    ("negativePrompt", _guided), ("duration", _always), ("seed", _always), ("steps", _always),
    ("CFGScale", _guided), ("strength", _always), ("numberResults", _always),
    ("outputType", _always), ("outputFormat", _always), ("audioSettings", _always),
    ("deliveryMethod", _always), ("webhookURL", _always), ("uploadEndpoint", _always),
    ("includeCost", _always), ("ttl", _always), ("inputs", _always), ("settings", _always),
    ("advancedFeatures", lambda v: v.xl),
)

#: `settings` keys, in reading (and `allowedValues`) order, and which models accept them. Runware's turbo allow-list
#: comes first in Runware's order; the last six are Cantata extensions.
SETTINGS_KEYS: tuple[tuple[str, Callable[[Variant], bool]], ...] = (
    ("lyrics", _always), ("bpm", _always), ("keyScale", _always), ("timeSignature", _always),
    ("vocalLanguage", _always), ("guidanceType", _guided), ("cfgIntervalStart", _guided),
    ("cfgIntervalEnd", _guided), ("coverConditioningScale", _always),
    ("repaintingStart", _always), ("repaintingEnd", _always),
    ("repaintMode", _always), ("repaintStrength", _always), ("dcw", _always),
    ("task", lambda v: any(t in v.tasks for t in EXTRA_TASKS)),
    ("trackName", lambda v: LEGO in v.tasks or EXTRACT in v.tasks),
    ("trackClasses", lambda v: COMPLETE in v.tasks),
)
INPUTS_KEYS = ("audio", "referenceAudios")
AUDIO_SETTINGS_KEYS = ("sampleRate", "bitrate", "channels")


@dataclass(frozen=True)
class Limits:
    """Server-side caps. A deployment may tighten them; loosening past the protocol's own
    bounds (3 results, 300 s, 3000 characters, ttl >= 60) would accept what Runware refuses."""

    max_number_results: int = 3
    max_duration: float = 300.0
    max_prompt_chars: int = 3000
    max_lyrics_chars: int = 3000
    min_ttl: int = 60
    max_ttl: int = 7 * 24 * 3600


def validate_audio_inference(
    task: Any, *, docs_base: str = DEFAULT_DOCS_BASE, limits: Limits = Limits()
) -> AudioInferenceTask:
    """Validate one `audioInference` task object; raise the first `RunwareError` found, with
    taskType, taskUUID (when the client sent a string, so it can match the error) and a link
    into our docs filled in."""
    try:
        return _validate(task, limits)
    except RunwareError as err:
        uuid = task.get("taskUUID") if isinstance(task, dict) else None
        err.task_type = TASK_TYPE
        err.task_uuid = uuid if isinstance(uuid, str) and len(uuid) <= 100 else None
        err.documentation = documentation_url(err.parameter, docs_base)
        raise


def validate_task_uuid(value: Any) -> str:
    """The taskUUID as sent (not re-cased: clients match replies on the exact string)."""
    if value is None:
        raise RunwareError("missingTaskUUID", "taskUUID is required: a UUID v4 string unique per task.",
                           parameter="taskUUID", type="string")
    if not isinstance(value, str) or not _UUID4.fullmatch(value):
        raise RunwareError("invalidTaskUUID", "taskUUID must be a UUID v4 string, e.g. "
                           "'a770f077-f413-47de-9dac-be0b26a35da6'.", parameter="taskUUID", type="string")
    return value


def allowed_settings_keys(variant: Variant) -> tuple[str, ...]:
    """The `settings` keys `variant` accepts, in the order `allowedValues` lists them."""
    return tuple(key for key, accepts in SETTINGS_KEYS if accepts(variant))


def _validate(task: Any, limits: Limits) -> AudioInferenceTask:
    if not isinstance(task, dict):
        raise RunwareError("invalidTaskObject", "Each task must be a JSON object.")
    task_uuid = validate_task_uuid(task.get("taskUUID"))
    _task_type(task.get("taskType"))
    variant = _variant(task.get("model"))
    _top_level_keys(task, variant)
    inputs = _inputs(task.get("inputs"), variant.air)
    source = inputs.audio

    prompt = _text(task.get("positivePrompt"), "positivePrompt", "invalidPositivePrompt", 2,
                   limits.max_prompt_chars)
    if prompt is None:
        raise RunwareError("missingPositivePrompt", "positivePrompt is required: a string of 2 to "
                           f"{limits.max_prompt_chars} characters.", parameter="positivePrompt", type="string")
    negative = _text(task.get("negativePrompt"), "negativePrompt", "invalidNegativePrompt", 0,
                     limits.max_prompt_chars)
    negative = negative if negative and negative.strip() else None
    duration = _duration(task.get("duration"), limits)
    if duration is not None and source is not None:
        raise _conflict("duration", "inputs.audio", "duration cannot be used with inputs.audio: "
                        "the source track sets the length.")
    seed = _integer(task.get("seed"), "seed", "invalidSeed", 0, MAX_SEED)
    steps = _integer(task.get("steps"), "steps", "invalidSteps", 1, variant.max_steps)
    cfg_scale = _number(task.get("CFGScale"), "CFGScale", "invalidCFGScale", MIN_CFG_SCALE, MAX_CFG_SCALE)
    if negative is not None and cfg_scale is not None and cfg_scale <= 1:
        raise _conflict("negativePrompt", "CFGScale", "negativePrompt needs CFGScale greater than 1 "
                        "(leave CFGScale out to use the model default).")
    strength = _number(task.get("strength"), "strength", "invalidStrength", 0, 1)
    _needs_source("strength", strength, source)
    number_results = _integer(task.get("numberResults"), "numberResults", "invalidNumberResults", 1,
                              limits.max_number_results)
    output_type = _default(_choice(task.get("outputType"), "outputType", "invalidOutputType", OUTPUT_TYPES),
                           "URL")
    output_format = _default(_choice(task.get("outputFormat"), "outputFormat", "invalidOutputFormat",
                                     OUTPUT_FORMATS, normalize=str.upper), "MP3")
    audio_settings = _audio_settings(task.get("audioSettings"), output_format, variant.air)
    delivery = _choice(task.get("deliveryMethod"), "deliveryMethod", "invalidDeliveryMethod",
                       DELIVERY_METHODS)
    webhook_url = _url(task.get("webhookURL"), "webhookURL", "invalidWebhookURL")
    upload_endpoint = _url(task.get("uploadEndpoint"), "uploadEndpoint", "invalidUploadEndpoint")
    include_cost = _boolean(task.get("includeCost"), "includeCost", "invalidIncludeCost")
    ttl = _integer(task.get("ttl"), "ttl", "invalidTTL", limits.min_ttl, limits.max_ttl, "seconds")
    if ttl is not None and output_type != "URL":
        raise _conflict("ttl", "outputType", "ttl only applies to outputType URL.")
    settings = _settings(task.get("settings"), variant, limits, source)
    _object(task.get("advancedFeatures"), "advancedFeatures", "invalidAdvancedFeatures", (), variant.air)

    if source is None:
        kind = TEXT2MUSIC
        duration = _default(duration, min(DEFAULT_DURATION, limits.max_duration))
    elif settings.task is not None:
        kind = settings.task
    else:
        kind = REPAINT if settings.repainting_start is not None else COVER
    return AudioInferenceTask(
        task_uuid=task_uuid,
        variant=variant,
        task_kind=kind,
        positive_prompt=prompt,
        negative_prompt=negative,
        duration=duration,
        seed=seed,
        steps=_default(steps, variant.steps),
        cfg_scale=None if variant.turbo else _default(cfg_scale, variant.guidance_scale),
        strength=strength,
        number_results=_default(number_results, 1),
        output_type=output_type,
        output_format=output_format,
        audio_settings=audio_settings,
        delivery_method=_default(delivery, "sync"),
        webhook_url=webhook_url,
        upload_endpoint=upload_endpoint,
        include_cost=_default(include_cost, False),
        ttl=ttl,
        inputs=inputs,
        settings=settings,
    )


# -- the steps -----------------------------------------------------------------------------------

def _task_type(value: Any) -> None:
    if value is None:
        raise RunwareError("missingTaskType", "taskType is required.", parameter="taskType", type="string")
    if value != TASK_TYPE:
        raise RunwareError("invalidTaskType", f"taskType must be '{TASK_TYPE}'.", parameter="taskType",
                           type="string", allowed_values=_quoted([TASK_TYPE]))


def _variant(value: Any) -> Variant:
    if value is None:
        raise RunwareError("missingModel", "model is required: one of the ACE-Step AIRs.",
                           parameter="model", type="string", allowed_values=_quoted(AIR_CHOICES))
    if isinstance(value, str):
        try:
            return get_variant(value)
        except KeyError:
            pass
    raise RunwareError("invalidModel", f"model must be one of: {', '.join(AIR_CHOICES)}.",
                       parameter="model", type="string", allowed_values=_quoted(AIR_CHOICES))


def _top_level_keys(task: dict, variant: Variant) -> None:
    if variant.turbo and task.get("CFGScale") is not None:
        raise RunwareError("unsupportedCFGScaleForModel", f"{variant.air} is a turbo model and runs "
                           "without classifier-free guidance: leave CFGScale out.",
                           parameter="CFGScale", type="float")
    _check_keys(task, tuple(key for key, accepts in TOP_LEVEL_KEYS if accepts(variant)), "", variant.air)


def _inputs(raw: Any, air: str) -> Inputs:
    obj = _object(raw, "inputs", "invalidInputs", INPUTS_KEYS, air)
    audio = obj.get("audio")
    if audio is not None and not (isinstance(audio, str) and audio.strip()):
        raise RunwareError("invalidInputsAudio", "inputs.audio must be a non-empty string: a URL, a "
                           "data URI, base64 data or a media UUID.", parameter="inputs.audio", type="string")
    refs = _default(obj.get("referenceAudios"), [])
    if not (isinstance(refs, list) and len(refs) <= MAX_REFERENCE_AUDIOS
            and all(isinstance(r, str) and r.strip() for r in refs)):
        raise RunwareError("invalidReferenceAudios", "inputs.referenceAudios must be a list of at most "
                           f"{MAX_REFERENCE_AUDIOS} non-empty strings (URL, data URI, base64 or media UUID).",
                           parameter="inputs.referenceAudios", type="string[]")
    return Inputs(audio=audio, reference_audios=tuple(refs))


def _duration(value: Any, limits: Limits) -> float | None:
    duration = _number(value, "duration", "invalidDurationNumber", MIN_DURATION, limits.max_duration, "seconds")
    if duration is None:
        return None
    if abs(duration * 10 - round(duration * 10)) > 1e-6:
        raise RunwareError("invalidDurationNumber", "duration must be a multiple of 0.1 seconds "
                           "(at most one decimal).", parameter="duration", type="float")
    return round(duration, 1)


def _audio_settings(raw: Any, fmt: str, air: str) -> AudioSettings | None:
    """Bitrate and sample rate only exist for lossy formats; their windows live in the codecs
    module so that what we accept is what the encoder can do."""
    obj = _object(raw, "audioSettings", "invalidAudioSettings", AUDIO_SETTINGS_KEYS, air)
    if fmt not in LOSSY_FORMATS:
        if any(v is not None for v in obj.values()):
            raise _conflict("audioSettings", "outputFormat", "audioSettings applies only to MP3 and OGG "
                            "output; leave it out for WAV and FLAC.")
        return None
    rate = _choice(obj.get("sampleRate"), "audioSettings.sampleRate", "invalidSampleRate",
                   codecs.ALLOWED_SAMPLE_RATES[fmt], type_="integer", note=f"Hz for {fmt}")
    rate = _default(rate, DEFAULT_SAMPLE_RATE)
    channels = _choice(obj.get("channels"), "audioSettings.channels", "invalidChannels",
                       codecs.ALLOWED_CHANNELS, type_="integer")
    channels = _default(channels, DEFAULT_CHANNELS)
    bitrate = _integer(obj.get("bitrate"), "audioSettings.bitrate", "invalidBitrate",
                       *codecs.bitrate_window(fmt, rate, channels),
                       f"kbps for {fmt} at {rate} Hz, {channels} channel(s)")
    return AudioSettings(sample_rate=rate, bitrate=_default(bitrate, codecs.default_bitrate(fmt, rate, channels)),
                         channels=channels)


def _settings(raw: Any, variant: Variant, limits: Limits, source: str | None) -> Settings:
    s = _object(raw, "settings", "invalidSettings", allowed_settings_keys(variant), variant.air)
    lyrics = _text(s.get("lyrics"), "settings.lyrics", "invalidLyrics", 10, limits.max_lyrics_chars)
    bpm = _integer(s.get("bpm"), "settings.bpm", "invalidBpm", 30, 300)
    key_scale = _key_scale(s.get("keyScale"))
    time_signature = _choice(s.get("timeSignature"), "settings.timeSignature", "invalidTimeSignature",
                             TIME_SIGNATURES, type_="integer", normalize=lambda t: _TIME_SIGNATURE_TEXT.get(t, t))
    language = _choice(s.get("vocalLanguage"), "settings.vocalLanguage", "invalidVocalLanguage",
                       VOCAL_LANGUAGES)
    guidance = _choice(s.get("guidanceType"), "settings.guidanceType", "invalidGuidanceType", GUIDANCE_TYPES)
    cfg_start = _number(s.get("cfgIntervalStart"), "settings.cfgIntervalStart", "invalidCfgInterval", 0, 1)
    cfg_end = _number(s.get("cfgIntervalEnd"), "settings.cfgIntervalEnd", "invalidCfgInterval", 0, 1)
    cfg_start, cfg_end = _default(cfg_start, 0.0), _default(cfg_end, 1.0)
    if cfg_start > cfg_end:
        raise RunwareError("invalidCfgInterval", "settings.cfgIntervalStart must not be greater than "
                           "settings.cfgIntervalEnd.", parameter=["settings.cfgIntervalStart",
                                                                  "settings.cfgIntervalEnd"], type="float")
    cover = _number(s.get("coverConditioningScale"), "settings.coverConditioningScale",
                    "invalidCoverConditioningScale", 0, 1)
    _needs_source("settings.coverConditioningScale", cover, source)

    start = _number(s.get("repaintingStart"), "settings.repaintingStart", "invalidRepaintingStart",
                    -300, 300, "seconds; negative prepends")
    _needs_source("settings.repaintingStart", start, source)
    end = _number(s.get("repaintingEnd"), "settings.repaintingEnd", "invalidRepaintingEnd", 0, 300, "seconds")
    _needs_source("settings.repaintingEnd", end, source)
    if end is not None and end <= _default(start, 0.0):
        raise RunwareError("invalidRepaintingEnd", "settings.repaintingEnd must be greater than "
                           "settings.repaintingStart (0 when left out).", parameter="settings.repaintingEnd",
                           type="float")
    region = start is not None or end is not None
    region_key = "settings.repaintingStart" if start is not None else "settings.repaintingEnd"

    mode = _choice(s.get("repaintMode"), "settings.repaintMode", "invalidRepaintMode", REPAINT_MODES)
    repaint_strength = _number(s.get("repaintStrength"), "settings.repaintStrength", "invalidRepaintStrength", 0, 1)
    for key, value in (("settings.repaintMode", mode), ("settings.repaintStrength", repaint_strength)):
        if value is not None and not region:
            raise RunwareError("missingRepaintingRange", f"{key} only applies to a repaint: also send "
                               "settings.repaintingStart and/or settings.repaintingEnd.",
                               parameter=[key, "settings.repaintingStart", "settings.repaintingEnd"])
    if repaint_strength is not None and mode not in (None, "balanced"):
        raise _conflict("settings.repaintStrength", "settings.repaintMode",
                        "settings.repaintStrength only applies to repaintMode 'balanced'.")

    task = _choice(s.get("task"), "settings.task", "invalidTask",
                   tuple(t for t in EXTRA_TASKS if t in variant.tasks))
    _needs_source("settings.task", task, source)
    if task in (EXTRACT, COMPLETE) and region:
        raise _conflict("settings.task", region_key, f"settings.task '{task}' works on the whole source "
                        "track and takes no repainting region.")
    track_name = _choice(s.get("trackName"), "settings.trackName", "invalidTrackName", TRACK_NAMES)
    if task in (LEGO, EXTRACT) and track_name is None:
        raise RunwareError("missingTrackName", f"settings.task '{task}' needs settings.trackName.",
                           parameter="settings.trackName", type="string", allowed_values=_quoted(TRACK_NAMES))
    if track_name is not None and task not in (LEGO, EXTRACT):
        raise _conflict("settings.trackName", "settings.task",
                        "settings.trackName only applies to settings.task 'lego' or 'extract'.")
    track_classes = _track_classes(s.get("trackClasses"))
    if task == COMPLETE and not track_classes:
        raise RunwareError("missingTrackClasses", "settings.task 'complete' needs settings.trackClasses.",
                           parameter="settings.trackClasses", type="string[]", allowed_values=_quoted(TRACK_NAMES))
    if track_classes and task != COMPLETE:
        raise _conflict("settings.trackClasses", "settings.task",
                        "settings.trackClasses only applies to settings.task 'complete'.")
    dcw = _boolean(s.get("dcw"), "settings.dcw", "invalidDcw")

    return Settings(
        lyrics=lyrics,
        bpm=bpm,
        key_scale=key_scale,
        time_signature=time_signature,
        vocal_language=_default(language, "en"),
        guidance_type=_default(guidance, variant.guidance_type),
        cfg_interval_start=cfg_start,
        cfg_interval_end=cfg_end,
        cover_conditioning_scale=_default(cover, 1.0),
        repainting_start=_default(start, 0.0) if region else None,
        repainting_end=end,
        repaint_mode=_default(mode, "balanced"),
        repaint_strength=_default(repaint_strength, 0.5),
        task=task,
        track_name=track_name,
        track_classes=track_classes,
        dcw=_default(dcw, False),
    )


def _key_scale(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    parts = value.split() if isinstance(value, str) else ()
    canonical = f"{parts[0]} {parts[1].lower()}" if len(parts) == 2 else None
    if canonical not in KEY_SCALES:
        raise RunwareError("invalidKeyScale", "settings.keyScale must be '<Note><accidental> <major|minor>' "
                           "with Note A-G and accidental none, '#', 'b', '♯' or '♭' (e.g. 'F# minor'), "
                           "or '' to let the model decide.", parameter="settings.keyScale", type="string",
                           allowed_values=_quoted(KEY_SCALES))
    return canonical


def _track_classes(value: Any) -> tuple[str, ...]:
    classes = _default(value, [])
    if not (isinstance(classes, list) and all(isinstance(c, str) and c in TRACK_NAMES for c in classes)
            and len(set(classes)) == len(classes)):
        raise RunwareError("invalidTrackClasses", "settings.trackClasses must be a list of distinct stem "
                           f"names from: {', '.join(TRACK_NAMES)}.", parameter="settings.trackClasses",
                           type="string[]", allowed_values=_quoted(TRACK_NAMES))
    return tuple(classes)


# -- readers: each returns None for an absent (or null) value ---------------------------------------

def _integer(value: Any, path: str, code: str, lo: int, hi: int, note: str = "") -> int | None:
    if value is None:
        return None
    if type(value) is not int or not lo <= value <= hi:  # type(): bool is an int subclass
        raise RunwareError(code, f"{path} must be an integer between {lo} and {hi}{_paren(note)}.",
                           parameter=path, type="integer")
    return value


def _number(value: Any, path: str, code: str, lo: float, hi: float, note: str = "") -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float) or not lo <= value <= hi:  # NaN fails the comparison
        raise RunwareError(code, f"{path} must be a number between {_fmt(lo)} and {_fmt(hi)}{_paren(note)}.",
                           parameter=path, type="float")
    return float(value)


def _text(value: Any, path: str, code: str, lo: int, hi: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value.strip()) < lo or len(value) > hi:
        raise RunwareError(code, f"{path} must be a string of {lo} to {hi} characters.",
                           parameter=path, type="string")
    return value


def _boolean(value: Any, path: str, code: str) -> bool | None:
    if value is not None and type(value) is not bool:
        raise RunwareError(code, f"{path} must be true or false.", parameter=path, type="boolean")
    return value


def _choice(value: Any, path: str, code: str, choices: Sequence, *, type_: str = "string",
            normalize: Callable[[str], Any] | None = None, note: str = "") -> Any:
    if value is None:
        return None
    if normalize is not None and isinstance(value, str):
        value = normalize(value)
    if type(value) is not _PYTHON_TYPES[type_] or value not in choices:
        listed = ", ".join(map(str, choices)) if len(choices) <= 12 else "the values in allowedValues"
        raise RunwareError(code, f"{path} must be one of {listed}{_paren(note)}.", parameter=path,
                           type=type_, allowed_values=_quoted(choices))
    return value


def _url(value: Any, path: str, code: str) -> str | None:
    """Syntax only: where the URL points (SSRF rules) is checked where it is used."""
    if value is None:
        return None
    try:
        ok = isinstance(value, str) and len(value) <= 2048 and value.isprintable() and " " not in value
        parts = urlsplit(value) if ok else None
        ok = ok and parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        ok = ok and (parts.port is None or parts.port > 0)  # .port raises on a bad port
    except ValueError:
        ok = False
    if not ok:
        raise RunwareError(code, f"{path} must be an absolute http:// or https:// URL.", parameter=path,
                           type="string")
    return value


def _object(value: Any, path: str, code: str, allowed: tuple[str, ...], air: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RunwareError(code, f"{path} must be an object.", parameter=path, type="object")
    _check_keys(value, allowed, f"{path}.", air)
    return value


def _check_keys(obj: dict, allowed: tuple[str, ...], prefix: str, air: str) -> None:
    for key, value in obj.items():
        if value is not None and key not in allowed:
            path = f"{prefix}{key}"
            raise RunwareError("unsupportedParameter", f"'{path}' is not a supported parameter for {air}.",
                               parameter=path, allowed_values=_quoted(allowed) or None)


def _needs_source(path: str, value: Any, source: str | None) -> None:
    if value is not None and source is None:
        raise RunwareError("missingInputsAudio", f"{path} transforms a source track: also send inputs.audio.",
                           parameter=[path, "inputs.audio"])


def _conflict(first: str, second: str, message: str) -> RunwareError:
    return RunwareError("conflictingParameters", message, parameter=[first, second])


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def _quoted(values: Sequence) -> str:
    """Runware's allowedValues style: "'a','b','c'"."""
    return ",".join(f"'{v}'" for v in values)


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _paren(note: str) -> str:
    return f" ({note})" if note else ""
