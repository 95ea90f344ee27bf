"""Runware-style errors: one exception type, serialised as the `errors[]` item clients parse.

Runware clients (SDKs, CLI) read `code`, `message`, `parameter`, `type`, `taskType`, `taskUUID`,
`documentation` and `allowedValues` from each error; the SDKs bucket codes by prefix
(`invalid*`, `missing*`, `unsupported*` are validation errors), so the codes below keep to those
prefixes.

Naming convention for the codes this layer emits:

* `missing<Name>`: a value that must be present is absent. `<Name>` is the JSON leaf name
  (`missingPositivePrompt`), or what has to be added for another field to make sense
  (`missingInputsAudio`, `missingRepaintingRange`).
* `invalid<Name>`: a value has the wrong type, is out of range or not one of the allowed values.
  `<Name>` is the JSON leaf name with its first letter upper-cased and the protocol's own
  capitalisation kept (`invalidCFGScale`, `invalidWebhookURL`, `invalidTTL`, `invalidBpm`).
  Exceptions, each for a reason: `invalidDurationNumber` is the code Runware returns live for
  ACE-Step durations; `invalidCfgInterval` covers both interval ends and their order;
  `invalidInputsAudio` spells out `inputs` because a bare "audio" is ambiguous in an audio API;
  `invalidTaskObject` is for a task that is not a JSON object at all.
* `unsupportedParameter`: the key is unknown, or not available on the requested model;
  `unsupportedCFGScaleForModel`: the live Runware code for `CFGScale` on a turbo model.
* `conflictingParameters`: two fields that are valid alone cannot be combined; `parameter` is
  the list of both paths.
"""

from __future__ import annotations

from typing import Any

DEFAULT_DOCS_BASE = "http://localhost:8080"

#: Every code the API validation layer emits, with what it means. Docs and tests enumerate it.
ERROR_CODES: dict[str, str] = {
    "invalidTaskObject": "The task is not a JSON object.",
    "missingTaskUUID": "taskUUID is absent.",
    "invalidTaskUUID": "taskUUID is not a UUID v4 string.",
    "missingTaskType": "taskType is absent.",
    "invalidTaskType": "taskType is not 'audioInference'.",
    "missingModel": "model is absent.",
    "invalidModel": "model is not one of the served ACE-Step AIRs (or their short names/slugs).",
    "unsupportedParameter": "A key that is unknown or not available on the requested model.",
    "unsupportedCFGScaleForModel": "CFGScale was sent to a turbo model, which runs without guidance.",
    "conflictingParameters": "Two parameters that cannot be used together.",
    "missingPositivePrompt": "positivePrompt is absent.",
    "invalidPositivePrompt": "positivePrompt is not a string of 2 to 3000 characters.",
    "invalidNegativePrompt": "negativePrompt is not a string of at most 3000 characters.",
    "invalidDurationNumber": "duration is not a number of seconds in 30..300 with at most one decimal.",
    "invalidSeed": "seed is not an integer in 0..9223372036854775807.",
    "invalidSteps": "steps is not an integer in 1..the model's maximum (20 turbo, 300 otherwise).",
    "invalidCFGScale": "CFGScale is not a number in 1..30.",
    "invalidStrength": "strength is not a number in 0..1.",
    "invalidNumberResults": "numberResults is not an integer in 1..the server's maximum.",
    "invalidOutputType": "outputType is not URL, base64Data or dataURI.",
    "invalidOutputFormat": "outputFormat is not MP3, WAV, FLAC or OGG.",
    "invalidAudioSettings": "audioSettings is not an object.",
    "invalidSampleRate": "audioSettings.sampleRate is not a rate the output format supports.",
    "invalidChannels": "audioSettings.channels is not 1 or 2.",
    "invalidBitrate": "audioSettings.bitrate (kbps) is outside the window for the format and rate.",
    "invalidDeliveryMethod": "deliveryMethod is not sync or async.",
    "invalidWebhookURL": "webhookURL is not an absolute http(s) URL.",
    "invalidUploadEndpoint": "uploadEndpoint is not an absolute http(s) URL.",
    "invalidIncludeCost": "includeCost is not a boolean.",
    "invalidTTL": "ttl is not an integer number of seconds within the server's window.",
    "invalidInputs": "inputs is not an object.",
    "invalidInputsAudio": "inputs.audio is not a non-empty string.",
    "invalidReferenceAudios": "inputs.referenceAudios is not a list of at most 4 non-empty strings.",
    "missingInputsAudio": "A field that transforms a source track was sent without inputs.audio.",
    "invalidSettings": "settings is not an object.",
    "invalidLyrics": "settings.lyrics is not a string of 10 to 3000 characters.",
    "invalidBpm": "settings.bpm is not an integer in 30..300.",
    "invalidKeyScale": "settings.keyScale is not '<Note><accidental> <major|minor>' or ''.",
    "invalidTimeSignature": "settings.timeSignature is not 2, 3, 4 or 6.",
    "invalidVocalLanguage": "settings.vocalLanguage is not one of the 51 supported codes.",
    "invalidGuidanceType": "settings.guidanceType is not apg or cfg.",
    "invalidCfgInterval": "settings.cfgIntervalStart/End is outside 0..1, or start > end.",
    "invalidCoverConditioningScale": "settings.coverConditioningScale is not a number in 0..1.",
    "invalidRepaintingStart": "settings.repaintingStart is not a number of seconds in -300..300.",
    "invalidRepaintingEnd": "settings.repaintingEnd is not in 0..300, or not after repaintingStart.",
    "invalidRepaintMode": "settings.repaintMode is not conservative, balanced or aggressive.",
    "invalidRepaintStrength": "settings.repaintStrength is not a number in 0..1.",
    "missingRepaintingRange": "repaintMode/repaintStrength sent without repaintingStart or repaintingEnd.",
    "invalidTask": "settings.task is not one of the extra tasks the model supports.",
    "invalidTrackName": "settings.trackName is not one of the 12 stem names.",
    "missingTrackName": "settings.task lego or extract was sent without settings.trackName.",
    "invalidTrackClasses": "settings.trackClasses is not a list of distinct stem names.",
    "missingTrackClasses": "settings.task complete was sent without settings.trackClasses.",
    "invalidDcw": "settings.dcw is not a boolean.",
    "invalidAdvancedFeatures": "advancedFeatures is not an object.",
}


def documentation_url(parameter: str | list[str] | None, docs_base: str = DEFAULT_DOCS_BASE) -> str:
    """Link to our API reference, anchored the way Runware anchors its own (`settings.bpm` ->
    `#request-settings-bpm`), so a client that follows the link lands on the field."""
    page = f"{docs_base.rstrip('/')}/docs/api"
    first = parameter[0] if isinstance(parameter, list) and parameter else parameter
    if not isinstance(first, str):
        return page
    return f"{page}#request-{first.replace('.', '-').lower()}"


class RunwareError(Exception):
    """One failed task, as Runware reports it. `http_status` is what a REST reply carrying only
    this error should use."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        parameter: str | list[str] | None = None,
        type: str | None = None,  # noqa: A002 - the protocol's field name
        allowed_values: Any = None,
        task_type: str | None = None,
        task_uuid: str | None = None,
        documentation: str | None = None,
        http_status: int = 400,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.parameter = parameter
        self.type = type
        self.allowed_values = allowed_values
        self.task_type = task_type
        self.task_uuid = task_uuid
        self.documentation = documentation
        self.http_status = http_status

    def to_dict(self) -> dict[str, Any]:
        """The JSON error object; keys whose value is None are left out, as Runware does."""
        fields = {
            "code": self.code,
            "message": self.message,
            "parameter": list(self.parameter) if isinstance(self.parameter, list) else self.parameter,
            "type": self.type,
            "taskType": self.task_type,
            "taskUUID": self.task_uuid,
            "documentation": self.documentation,
            "allowedValues": self.allowed_values,
        }
        return {k: v for k, v in fields.items() if v is not None}

    def __repr__(self) -> str:
        return f"RunwareError({self.code!r}, {self.message!r}, parameter={self.parameter!r})"


def all_codes() -> dict[str, str]:
    """Every code a client may see, with what it means: the docs page and the OpenAPI document list it."""
    from .codes import SERVER_ERROR_CODES

    return {**ERROR_CODES, **{code: text for code, (_, text) in SERVER_ERROR_CODES.items()}}
