"""Every error code a client may see, and the one exception base that carries one.

Exception tree (each layer raises its own subclass; none of them knows about HTTP)::

    CantataError                 code (a member of CATALOGUE), message, parameter
    ├── OutboundError            cantata.outbound: url*
    ├── AudioDecodeError         cantata.audio.decode: invalidAudio*
    ├── AudioEncodeError         cantata.audio.codecs: inferenceError (our own output cannot be encoded)
    ├── GenerationFailed         cantata.pipeline.request: inferenceError
    ├── InputError               cantata.jobs.inputs: invalidInputsAudio, invalidAudio*, mediaNotFound, url*
    └── RunwareError             cantata.api.errors: the wire's error object (any code)
        └── TaskFailure          a task's own failure, `status: "error"`

Only the API layer turns a `CantataError` into the Runware error object
(`cantata.api.errors.runware_error`); below it, a failure is a code, a message and the field it
concerns. A code outside the catalogue is refused when the exception is built, so no layer can
emit a code that the docs page and the OpenAPI document do not list.

Naming convention, kept to the prefixes Runware's SDKs bucket codes by (`invalid*`/`missing*`/
`unsupported*`/`conflict*`/`max*` read as validation errors, `*ApiKey*` as auth, `*Timeout*` as
timeouts, `*NotFound`/`*Expired`/`taskCancelled` as not found, `rateLimitExceeded` as rate
limiting); names are Runware's own where one exists (`invalidApiKey`, `conflictTaskUUID`,
`taskNotFound`, `rateLimitExceeded`, `inferenceError`):

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

HTTP status: `None` marks a task *outcome* (the request was fine; the task failed, was cancelled,
or is still running): reported with 200, because the SDKs retry 5xx, 408 and 429 by resubmitting
the same taskUUID, which could only earn a `conflictTaskUUID`. An outcome code found while a task
is being accepted (empty audio, a refused URL) is a 400.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Code(NamedTuple):
    status: int | None  # HTTP status of a reply carrying only this error; None: a task outcome
    description: str
    validation: bool = False  # reported by audioInference task validation, naming the field


def _field(description: str) -> Code:
    return Code(400, description, validation=True)


#: code -> (HTTP status or None for a task outcome, description, whether task validation reports it)
CATALOGUE: dict[str, Code] = {
    # -- audioInference task validation --------------------------------------------------------
    "invalidTaskObject": _field("The task is not a JSON object."),
    "missingTaskUUID": _field("taskUUID is absent."),
    "invalidTaskUUID": _field("taskUUID is not a UUID v4 string."),
    "missingTaskType": _field("A task has no taskType."),
    "invalidTaskType": _field("taskType is not 'audioInference'."),
    "missingModel": _field("model is absent."),
    "invalidModel": _field("model is not one of the served ACE-Step AIRs (or their short names/slugs)."),
    "unsupportedParameter": _field("A key that is unknown or not available on the requested model."),
    "unsupportedCFGScaleForModel": _field("CFGScale was sent to a turbo model, which runs without guidance."),
    "conflictingParameters": _field("Two parameters that cannot be used together."),
    "missingPositivePrompt": _field("positivePrompt is absent."),
    "invalidPositivePrompt": _field("positivePrompt is not a string of 2 to 3000 characters."),
    "invalidNegativePrompt": _field("negativePrompt is not a string of at most 3000 characters."),
    "invalidDurationNumber": _field("duration is not a number of seconds in 30..300 with at most one decimal."),
    "invalidSeed": _field("seed is not an integer in 0..9223372036854775807."),
    "invalidSteps": _field("steps is not an integer in 1..the model's maximum (20 turbo, 300 otherwise)."),
    "invalidCFGScale": _field("CFGScale is not a number in 1..30."),
    "invalidStrength": _field("strength is not a number in 0..1."),
    "invalidNumberResults": _field("numberResults is not an integer in 1..the server's maximum."),
    "invalidOutputType": _field("outputType is not URL, base64Data or dataURI."),
    "invalidOutputFormat": _field("outputFormat is not MP3, WAV, FLAC or OGG."),
    "invalidAudioSettings": _field("audioSettings is not an object."),
    "invalidSampleRate": _field("audioSettings.sampleRate is not a rate the output format supports."),
    "invalidChannels": _field("audioSettings.channels is not 1 or 2."),
    "invalidBitrate": _field("audioSettings.bitrate (kbps) is outside the window for the format and rate."),
    "invalidDeliveryMethod": _field("deliveryMethod is not sync or async."),
    "invalidWebhookURL": _field("webhookURL is not an absolute http(s) URL."),
    "invalidUploadEndpoint": _field("uploadEndpoint is not an absolute http(s) URL."),
    "invalidIncludeCost": _field("includeCost is not a boolean."),
    "invalidTTL": _field("ttl is not an integer number of seconds within the server's window."),
    "invalidInputs": _field("inputs is not an object."),
    "invalidInputsAudio": _field("inputs.audio is not a non-empty string."),
    "invalidReferenceAudios": _field("inputs.referenceAudios is not a list of at most 4 non-empty strings."),
    "missingInputsAudio": _field("A field that transforms a source track was sent without inputs.audio."),
    "invalidSettings": _field("settings is not an object."),
    "invalidLyrics": _field("settings.lyrics is not a string of 10 to 3000 characters."),
    "invalidBpm": _field("settings.bpm is not an integer in 30..300."),
    "invalidKeyScale": _field("settings.keyScale is not '<Note><accidental> <major|minor>' or ''."),
    "invalidTimeSignature": _field("settings.timeSignature is not 2, 3, 4 or 6."),
    "invalidVocalLanguage": _field("settings.vocalLanguage is not one of the 51 supported codes."),
    "invalidGuidanceType": _field("settings.guidanceType is not apg or cfg."),
    "invalidCfgInterval": _field("settings.cfgIntervalStart/End is outside 0..1, or start > end."),
    "invalidCoverConditioningScale": _field("settings.coverConditioningScale is not a number in 0..1."),
    "invalidRepaintingStart": _field("settings.repaintingStart is not a number of seconds in -300..300."),
    "invalidRepaintingEnd": _field("settings.repaintingEnd is not in 0..300, or not after repaintingStart."),
    "invalidRepaintMode": _field("settings.repaintMode is not conservative, balanced or aggressive."),
    "invalidRepaintStrength": _field("settings.repaintStrength is not a number in 0..1."),
    "missingRepaintingRange": _field("repaintMode/repaintStrength sent without repaintingStart or repaintingEnd."),
    "invalidTask": _field("settings.task is not one of the extra tasks the model supports."),
    "invalidTrackName": _field("settings.trackName is not one of the 12 stem names."),
    "missingTrackName": _field("settings.task lego or extract was sent without settings.trackName."),
    "invalidTrackClasses": _field("settings.trackClasses is not a list of distinct stem names."),
    "missingTrackClasses": _field("settings.task complete was sent without settings.trackClasses."),
    "invalidDcw": _field("settings.dcw is not a boolean."),
    "invalidAdvancedFeatures": _field("advancedFeatures is not an object."),
    "invalidLora": _field("lora is not a list of at most 4 {model, weight} objects, or names one adapter twice."),
    "invalidLoraModel": _field("lora[i].model is not the name or AIR of an installed adapter for the requested "
                               "model's architecture."),
    "invalidLoraWeight": _field("lora[i].weight is not a number in -4..4."),
    "invalidThinking": _field("settings.thinking is not a boolean."),
    "unsupportedThinking": _field("settings.thinking is true but this server has no planner (5 Hz LM)."),
    "invalidPlanner": _field("settings.planner is not 0.6B, 1.7B or 4B."),
    "unsupportedPlanner": _field("A planner setting names a planner this server does not serve, or was sent to a "
                                 "server without one."),
    "invalidPlannerTemperature": _field("settings.plannerTemperature is not a number in 0..2."),
    "invalidPlannerCFGScale": _field("settings.plannerCFGScale is not a number in 1..10."),
    "invalidPlannerTopK": _field("settings.plannerTopK is not an integer in 0..1000."),
    "invalidPlannerTopP": _field("settings.plannerTopP is not a number in 0..1."),
    "invalidRewriteCaption": _field("settings.rewriteCaption is not a boolean."),
    # -- the request, the API key and the other task types -------------------------------------
    "missingApiKey": Code(401, "No API key: send 'Authorization: Bearer <key>' or a leading authentication task."),
    "invalidApiKey": Code(401, "The API key is not one this server knows."),
    "unsupportedContentType": Code(415, "The body must be sent as Content-Type: application/json."),
    "maxRequestSizeExceeded": Code(413, "The body (or WebSocket message) is over the server's size limit."),
    "requestHeadersTooLarge": Code(431, "The request's headers (with its URL) are over the server's size limit."),
    "invalidJSON": Code(400, "The body is not valid JSON."),
    "invalidRequestBody": Code(400, "The body is not a non-empty JSON array of task objects."),
    "unsupportedTaskType": Code(400, "taskType is not one this server handles (see allowedValues)."),
    "conflictTaskUUID": Code(400, "A task with this taskUUID was already submitted; taskUUIDs are single-use."),
    "invalidModelSearch": Code(400, "A modelSearch field has the wrong type or is out of range (parameter names "
                                    "it)."),
    "missingPrompt": Code(400, "promptEnhance: prompt is absent."),
    "invalidPrompt": Code(400, "promptEnhance: prompt is not a string of 1 to 300 characters."),
    "invalidPromptMaxLength": Code(400, "promptEnhance: promptMaxLength is not an integer in 12..400."),
    "invalidPromptVersions": Code(400, "promptEnhance: promptVersions is not an integer in 1..5."),
    "unsupportedPromptEnhance": Code(400, "promptEnhance needs a planner (5 Hz LM) and this server serves none."),
    "unsupportedModel": Code(400, "The model is a valid ACE-Step AIR but this server does not serve it."),
    "invalidMediaStorage": Code(400, "mediaStorage needs operation 'upload' (with media) or 'delete' (with a media "
                                     "UUID)."),
    "invalidTaskHistory": Code(400, "A taskHistory field has the wrong type or is out of range (parameter names it)."),
    "conflictTaskNotFinished": Code(400, "taskHistory delete: the task is still queued or running; cancel it first."),
    "taskNotFound": Code(404, "No task with this taskUUID for this API key (unknown, expired or another key's)."),
    "mediaNotFound": Code(404, "No media with this UUID for this API key (unknown, deleted or expired)."),
    "mediaExpired": Code(404, "The media existed but its retention (ttl) is over."),
    "notFound": Code(404, "No such endpoint."),
    "methodNotAllowed": Code(405, "The endpoint does not take this HTTP method."),
    "rateLimitExceeded": Code(429, "The queue is full; retry with exponential backoff."),
    "serviceUnavailable": Code(503, "The server is shutting down or not ready; retry shortly."),
    "internalServerError": Code(500, "An unexpected server error (a bug: please report it)."),
    # -- input audio and URLs ------------------------------------------------------------------
    "urlNotAllowed": Code(400, "The URL's scheme, credentials or address is refused by the outbound policy."),
    "urlUnreachable": Code(None, "An input URL could not be fetched (connection failed)."),
    "urlTimeout": Code(None, "An input URL took longer than the outbound timeout."),
    "urlTooLarge": Code(None, "An input URL's body is over the size limit."),
    "urlHttpError": Code(None, "An input URL answered with an HTTP error status."),
    "invalidAudioEmpty": Code(None, "Input audio holds no samples."),
    "invalidAudioFormat": Code(None, "Input audio is not a decodable audio file."),
    "invalidAudioTooLong": Code(None, "Input audio is longer than the server's limit."),
    "invalidAudioTooLarge": Code(400, "Input audio is over the server's byte limit."),
    # -- task outcomes ---------------------------------------------------------------------------
    "inferenceError": Code(None, "Generation failed; the message says how."),
    "taskCancelled": Code(None, "The task was cancelled by its client."),
    "taskInterrupted": Code(None, "The server stopped twice while running the task; it is not retried again."),
    "syncWaitTimeout": Code(None, "A sync request's wait ran out; the task goes on: poll getResponse."),
    "uploadFailed": Code(None, "A result could not be PUT to uploadEndpoint; it stays retrievable here."),
}


def all_codes() -> dict[str, str]:
    """Every code a client may see, with what it means: the docs page and the OpenAPI document list it."""
    return {code: entry.description for code, entry in CATALOGUE.items()}


def known(code: str) -> str:
    """`code` itself, once it is checked to be in the catalogue (a ValueError names it if not)."""
    if code not in CATALOGUE:
        raise ValueError(f"error code {code!r} is not in cantata.errors.CATALOGUE; add it there first")
    return code


class CantataError(Exception):
    """A failure a client is told about: `code` (from the catalogue), `message`, and `parameter`,
    the request field it concerns (a JSON path, a list of paths, or None)."""

    def __init__(self, code: str, message: str, *, parameter: str | list[str] | None = None) -> None:
        super().__init__(message)
        self.code = known(code)
        self.message = message
        self.parameter = parameter

    def record(self) -> dict[str, Any]:
        """The plain form a task's stored error takes (the store and the renderer read it)."""
        return {"code": self.code, "message": self.message,
                **({"parameter": self.parameter} if self.parameter else {})}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CantataError:
        return cls(record["code"], record["message"], parameter=record.get("parameter"))
