"""The protocol as OpenAPI 3.1, generated from the validator's own field table.

Every `audioInference` field (type, range or choices, default, error code, which models accept it)
comes from `validation.FIELDS`, the table the validator's readers enforce; the task types from the
dispatcher's `TASK_TYPES`; the error codes from the code catalogue (`all_codes`). Nothing here
restates a rule, so the document cannot drift from the server.

Routes (`register_routes`):
  GET /openapi.json                          the OpenAPI 3.1 document
  GET /docs                                  Swagger UI, served from the installed swagger-ui-bundle
                                             (no CDN: it works offline)
  GET /docs/openapi-3.0.json                 the same document labelled 3.0.3, for that Swagger UI
                                             (4.15, which renders 3.0 only; the document keeps to the
                                             subset of JSON Schema both versions share)
  GET /v1/models/{model}/schema.json         one model's audioInference task as a JSON Schema
                                             (2020-12), as Runware publishes one per model; `model`
                                             is an AIR, short name or slug
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from .. import __version__
from ..audio import codecs
from ..limits import Limits
from ..models.variants import VARIANTS, Variant, get_variant
from . import model_search, prompt_enhance
from .dispatch import TASK_TYPES
from .history import DEFAULT_LIMIT as HISTORY_DEFAULT_LIMIT, MAX_LIMIT as HISTORY_MAX_LIMIT
from .history import OPERATIONS as HISTORY_OPERATIONS
from .errors import RunwareError, all_codes
from .validation import FIELDS, LOSSY_FORMATS, TASK_TYPE, FieldSpec, Scope

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
DOCS_COMPAT_PATH = "/docs/openapi-3.0.json"
DOCS_ASSETS_PATH = "/docs/assets"
MODEL_SCHEMA_PATH = "/v1/models/{model}/schema.json"
DRY_RUN_HEADER = "X-Runware-Dry-Run"
MEDIA_OPERATIONS = ("upload", "delete")

_JSON_TYPES = {"string": "string", "integer": "integer", "float": "number", "boolean": "boolean",
               "object": "object", "string[]": "array", "object[]": "array"}
_REQUIRED = ("taskType", "taskUUID", "model", "positivePrompt")
_REF = "#/components/schemas/"


# -- the audioInference task, field by field ----------------------------------------------------------

def _scopes(spec: FieldSpec, variants: Sequence[Variant], limits: Limits) -> list[Scope]:
    """Every situation the field's bounds can differ in: per model and, for `audioSettings`, per
    lossy output layout (the only formats that take audio settings)."""
    if not spec.path.startswith("audioSettings."):
        return [Scope(v, limits) for v in variants]
    return [Scope(v, limits, fmt, rate, channels) for v in variants for fmt in LOSSY_FORMATS
            for rate in codecs.ALLOWED_SAMPLE_RATES[fmt] for channels in codecs.ALLOWED_CHANNELS]


def _union(values: Iterable[Sequence]) -> list:
    merged: list = []
    for choices in values:
        merged += [c for c in choices if c not in merged]
    return merged


def _field_schema(spec: FieldSpec, variants: Sequence[Variant], limits: Limits, *, exact: bool) -> dict[str, Any]:
    """One field as JSON Schema. Over several models (or layouts) the bounds are the widest, and
    what differs per model is listed in `x-cantata.perModel`; `exact` (one model's schema) leaves
    that out."""
    scopes = _scopes(spec, variants, limits)
    schema: dict[str, Any] = {"type": _JSON_TYPES[spec.type]}
    lows = [lo for lo, _ in (spec.bounds(s) for s in scopes) if lo is not None]
    highs = [hi for _, hi in (spec.bounds(s) for s in scopes) if hi is not None]
    if spec.type in ("integer", "float"):
        schema.update({k: v for k, v in (("minimum", min(lows, default=None)), ("maximum", max(highs, default=None)))
                       if v is not None})
    elif spec.type == "string":
        if lows and min(lows) > 0:
            schema["minLength"] = min(lows)
        if highs:
            schema["maxLength"] = max(highs)
    elif spec.type in ("string[]", "object[]"):
        schema["items"] = {"type": "string", "minLength": 1}
        if highs:
            schema["maxItems"] = max(highs)
    if spec.choices is not None:
        choices = _union(spec.allowed(s) for s in scopes)
        if spec.path == "settings.keyScale":
            choices.append("")  # '' lets the model decide
        if spec.type == "string[]":
            schema["items"] = {"type": "string", "enum": choices}
            schema["uniqueItems"] = True
        else:
            schema["enum"] = choices
    if spec.pattern:
        schema["pattern"] = f"^{spec.pattern}$"
    defaults = {v.name: spec.default_for(Scope(v, limits)) for v in variants if spec.accepts(v)}
    by_layout = len({repr(spec.default_for(s)) for s in _scopes(spec, variants[:1], limits)}) > 1
    if len(set(map(repr, defaults.values()))) == 1 and next(iter(defaults.values())) is not None and not by_layout:
        schema["default"] = next(iter(defaults.values()))
    schema["description"] = _description(spec, variants, defaults)
    if by_layout:
        scope = Scope(variants[0], limits)
        schema["description"] += (f" The default depends on the output layout: {spec.default_for(scope)} for "
                                  f"{scope.output_format} at {scope.sample_rate} Hz, {scope.channels} channels.")
    if not exact:
        schema["x-cantata"] = _extension(spec, variants, limits, defaults)
    return schema


def _description(spec: FieldSpec, variants: Sequence[Variant], defaults: dict[str, Any]) -> str:
    parts = [spec.description]
    if spec.absent:
        parts.append(f"Absent: {spec.absent}.")
    if len(set(map(repr, defaults.values()))) > 1 and not spec.path.startswith("audioSettings."):
        groups: dict[str, list[str]] = {}
        for name, value in defaults.items():
            groups.setdefault(_text(value), []).append(name)
        parts.append("Default: " + "; ".join(f"{', '.join(names)}: {value}" for value, names in groups.items()) + ".")
    accepted = [v.name for v in variants if spec.accepts(v)]
    if len(accepted) < len(variants):
        parts.append(f"Models: {', '.join(accepted)}.")
    if spec.extension:
        parts.append("Cantata extension.")
    parts.append(f"Error code: {spec.code}" + (f", {spec.missing_code} when required and absent." if
                                                 spec.missing_code else "."))
    return " ".join(parts)


def _text(value: Any) -> str:
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _extension(spec: FieldSpec, variants: Sequence[Variant], limits: Limits,
               defaults: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable facts: the field's path and codes, which models accept it and, where
    they differ between models, its bounds, choices and default on each (over all output layouts
    for `audioSettings`)."""
    per_model = {}
    for v in variants:
        if not spec.accepts(v):
            continue
        scopes = _scopes(spec, [v], limits)
        facts: dict[str, Any] = {} if defaults[v.name] is None else {"default": defaults[v.name]}
        bounds = [spec.bounds(s) for s in scopes]
        if any(lo is not None for lo, _ in bounds):
            facts["minimum"] = min(lo for lo, _ in bounds if lo is not None)
        if any(hi is not None for _, hi in bounds):
            facts["maximum"] = max(hi for _, hi in bounds if hi is not None)
        if spec.choices is not None:
            facts["choices"] = _union(spec.allowed(s) for s in scopes)
        per_model[v.air] = facts
    facts = {"path": spec.path, "code": spec.code, "missingCode": spec.missing_code, "extension": spec.extension,
             "models": [v.air for v in variants if spec.accepts(v)]}
    if len({repr(f) for f in per_model.values()}) > 1:
        facts["perModel"] = per_model
    return {k: v for k, v in facts.items() if v is not None}


def _object_schema(parent: str, variants: Sequence[Variant], limits: Limits, *, exact: bool) -> dict[str, Any]:
    """The object at `parent` ("" for the task itself): its fields, nested objects built the same way."""
    properties = {}
    for spec in FIELDS:
        if spec.path.rpartition(".")[0] != parent or not any(spec.accepts(v) for v in variants):
            continue
        schema = _field_schema(spec, variants, limits, exact=exact)
        if spec.type == "object":
            children = _object_schema(spec.path, variants, limits, exact=exact)
            schema.update({k: v for k, v in children.items() if k != "type"})
            if not children["properties"]:
                schema["maxProperties"] = 0  # advancedFeatures: no key is known
        elif spec.type == "object[]":  # lora: its item's keys are the fields under its path
            schema["items"] = {**_object_schema(spec.path, variants, limits, exact=exact), "required": ["model"]}
        properties[spec.key] = schema
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    required = [key for key in _REQUIRED if key in properties and not parent]
    if required:
        schema["required"] = required
    return schema


def audio_inference_schema(variants: Sequence[Variant] = tuple(VARIANTS.values()), limits: Limits = Limits(), *,
                           exact: bool = False) -> dict[str, Any]:
    """The `audioInference` task over `variants`: exact for one model, the union (with per-model
    facts under `x-cantata`) for several."""
    schema = _object_schema("", variants, limits, exact=exact)
    schema["description"] = ("Generate music. JSON null means \"not given\" for every optional field. Rules "
                             "between fields are in each field's description; the first broken rule is "
                             "reported, in a fixed order.")
    return schema


def model_schema(variant: Variant, limits: Limits = Limits(), base_url: str = "") -> dict[str, Any]:
    """One model's `audioInference` task as a standalone JSON Schema (2020-12): only the fields
    the model accepts, with its own bounds and defaults, and `model` fixed to its AIR."""
    task = audio_inference_schema([variant], limits, exact=True)
    task["properties"]["model"]["enum"] = [variant.air]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": base_url + MODEL_SCHEMA_PATH.format(model=variant.air),
        "title": f"audioInference for {variant.air}",
        **task,
    }


# -- the other task types, the reply and the document ----------------------------------------------

def _task(task_type: str, description: str, properties: dict[str, Any] | None = None,
          required: Sequence[str] = ("taskType", "taskUUID")) -> dict[str, Any]:
    return {"type": "object", "description": description, "required": list(required),
            "properties": {"taskType": {"type": "string", "enum": [task_type]},
                           "taskUUID": {"$ref": _REF + "TaskUUID"}, **(properties or {})}}


def _task_schemas(variants: Sequence[Variant], limits: Limits) -> dict[str, dict[str, Any]]:
    tasks = {
        TASK_TYPE: audio_inference_schema(variants, limits),
        "getResponse": _task("getResponse", "Every item of a task so far, cumulative: processing items "
                             "with progress, then successes; failures in errors."),
        "getTaskDetails": _task("getTaskDetails", "The stored request and response of a task."),
        "mediaStorage": _task("mediaStorage", "Upload input audio (media: a data URI, base64 data or an "
                              "http(s) URL) to get a mediaUUID usable as inputs.audio, or delete one "
                              "(media: the mediaUUID).",
                              {"operation": {"type": "string", "enum": list(MEDIA_OPERATIONS)},
                               "media": {"type": "string", "minLength": 1}},
                              ("taskType", "taskUUID", "operation", "media")),
        "cancel": _task("cancel", "Cantata extension: remove a queued task or stop a running one at its next "
                        "step; it ends with taskCancelled."),
        "modelSearch": _task("modelSearch", "The served checkpoints (category checkpoint) and the installed "
                             "adapters (category lora, with baseModel), in Runware's shape: results and "
                             "totalResults.", _model_search_properties()),
        "promptEnhance": _task("promptEnhance", "Runware's prompt enhancement, answered by the 5 Hz LM planner "
                               "(its caption for the prompt, from the metadata phase): one item {taskType, "
                               "taskUUID, text, cost?} per version. unsupportedPromptEnhance without a planner.",
                               _prompt_enhance_properties(), ("taskType", "taskUUID", "prompt")),
        "taskHistory": _task("taskHistory", "Cantata extension: this API key's audioInference tasks, newest first "
                             "(operation list: items with status, request and result URLs, then nextCursor for "
                             "the next page, null on the last), or forget a finished one and its files "
                             "(operation delete, target: its taskUUID).",
                             {"operation": {"type": "string", "enum": list(HISTORY_OPERATIONS), "default": "list"},
                              "limit": {"type": "integer", "minimum": 1, "maximum": HISTORY_MAX_LIMIT,
                                        "default": HISTORY_DEFAULT_LIMIT},
                              "cursor": {"type": "string", "description": "nextCursor of the previous page"},
                              "target": {"type": "string", "description": "delete: the taskUUID to forget"}}),
        "ping": _task("ping", "Answers pong.", required=("taskType",)),
        "authentication": _task("authentication", "The API key, as the first task instead of an "
                                "Authorization header (WebSocket: the first message).",
                                {"apiKey": {"type": "string"}}, ("taskType", "apiKey")),
    }
    return {f"{_pascal(t)}Task": tasks[t] for t in TASK_TYPES}


def _model_search_properties() -> dict[str, Any]:
    text = {"type": "string", "minLength": 1, "maxLength": model_search.MAX_SEARCH_CHARS}
    return {"search": text, "tags": {"type": "array", "items": text}, "category": text,
            **{key: text for key in model_search.TEXT_FILTERS},
            "visibility": {"type": "string", "enum": list(model_search.VISIBILITIES)},
            "limit": {"type": "integer", "minimum": 1, "maximum": model_search.MAX_LIMIT,
                      "default": model_search.DEFAULT_LIMIT},
            "offset": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "default": 0}}


def _prompt_enhance_properties() -> dict[str, Any]:
    def bounded(bounds: tuple[int, int], default: int) -> dict[str, Any]:
        return {"type": "integer", "minimum": bounds[0], "maximum": bounds[1], "default": default}

    return {"prompt": {"type": "string", "minLength": prompt_enhance.PROMPT_CHARS[0],
                       "maxLength": prompt_enhance.PROMPT_CHARS[1]},
            "promptMaxLength": bounded(prompt_enhance.MAX_LENGTH, prompt_enhance.DEFAULT_MAX_LENGTH),
            "promptVersions": bounded(prompt_enhance.VERSIONS, prompt_enhance.DEFAULT_VERSIONS),
            "includeCost": {"type": "boolean", "default": False}}


def _pascal(name: str) -> str:
    return name[0].upper() + name[1:]


def _reply_schemas(codes: dict[str, str]) -> dict[str, dict[str, Any]]:
    string = {"type": "string"}
    return {
        "TaskUUID": {"type": "string", "description": "A UUID v4 chosen by the client."},
        "Error": {
            "type": "object", "required": ["code", "message"],
            "description": "One failed task. Codes:\n\n" + "\n".join(f"- `{c}`: {t}" for c, t in codes.items()),
            "properties": {
                "code": {"type": "string", "enum": list(codes)}, "message": string,
                "parameter": {"description": "The field's dotted path, or the paths of two fields in conflict.",
                              "anyOf": [string, {"type": "array", "items": string}]},
                "type": string, "taskType": string, "taskUUID": string,
                "documentation": {"type": "string", "description": "A link into /docs/api."},
                "allowedValues": {"type": "string", "description": "Runware's style: 'a','b','c'."},
                "status": {"type": "string", "enum": ["error"], "description": "Set on a task's own failure."},
            },
        },
        "DataItem": {
            "type": "object", "required": ["taskType"],
            "description": "One item of data[]: an audioInference result (success, or processing with progress), "
                           "an acknowledgement (taskType and taskUUID), or another task type's answer.",
            "properties": {
                "taskType": {"type": "string", "enum": list(TASK_TYPES)}, "taskUUID": string,
                "status": string, "progress": {"type": "integer", "minimum": 0, "maximum": 100},
                "audioUUID": string, "audioURL": string, "audioBase64Data": string, "audioDataURI": string,
                "seed": {"type": "integer"}, "cost": {"type": "number"}, "dryRun": {"type": "boolean"},
                "pong": {"type": "boolean"}, "text": string, "operation": string, "mediaUUID": string, "mediaURL": string,
                "request": {"type": "array", "items": {"type": "object"}}, "response": {"type": "object"},
                "attempts": {"type": "integer"},
                "queuePosition": {"type": "integer", "minimum": 0, "description": "Cantata extension, on a "
                                  "processing item while the task is queued: how many tasks of its model are "
                                  "ahead of it (0: next in line). A position, not a promise: API keys take turns."},
                "eta": {"type": "number", "minimum": 0, "description": "Cantata extension, on a processing item: "
                        "estimated seconds until the task is done (queued: from its position and the model's "
                        "recent task times; running: from its progress). Absent when there is nothing to go on."},
                "plannedMetadata": {
                    "type": "object", "description": "Cantata extension: what the 5 Hz LM planner decided "
                    "(the user's values where given); audioCodes is the number of codes written per result.",
                    "properties": {"bpm": {"type": "integer"}, "keyScale": string, "timeSignature": {"type": "integer"},
                                   "duration": {"type": "number"}, "vocalLanguage": string, "caption": string,
                                   "audioCodes": {"type": "integer"}},
                },
            },
        },
        "Envelope": {
            "type": "object", "description": "Every reply: data and/or errors; one task's error never stops the others.",
            "properties": {"data": {"type": "array", "items": {"$ref": _REF + "DataItem"}},
                           "errors": {"type": "array", "items": {"$ref": _REF + "Error"}}},
        },
    }


def _envelope_responses(statuses: dict[str, str]) -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": _REF + "Envelope"}}}
    return {status: {"description": text, "content": content} for status, text in statuses.items()}


def openapi_document(*, variants: Sequence[Variant] = tuple(VARIANTS.values()), limits: Limits = Limits(),
                     base_url: str | None = None, served: Sequence[str] = ()) -> dict[str, Any]:
    """The whole protocol as an OpenAPI 3.1 document."""
    codes = dict(sorted(all_codes().items()))
    tasks = _task_schemas(variants, limits)
    served_text = f" This server serves: {', '.join(served)}." if served else ""
    errors = {"400": "Every task failed validation (or the body is not a JSON array of tasks).",
              "401": "No or unknown API key.", "404": "Not found.", "405": "Method not allowed.",
              "413": "The body is over the size limit.", "415": "The body is not application/json.",
              "429": "The queue is full; retry with backoff.", "500": "A bug: please report it.",
              "503": "Shutting down or not ready."}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Cantata", "version": __version__,
                 "description": "ACE-Step 1.5 music generation behind Runware's audioInference protocol. "
                                "The same tasks go over WebSocket at /v1. Each model's task is also published "
                                f"as a JSON Schema at {MODEL_SCHEMA_PATH}.{served_text}"},
        "paths": {
            "/v1": {"post": {
                "operationId": "runTasks", "summary": "Run a JSON array of tasks",
                "description": "Task types: " + ", ".join(TASK_TYPES) + ". Send the key as "
                               "'Authorization: Bearer <key>' or in a leading authentication task.",
                "parameters": [{"name": DRY_RUN_HEADER, "in": "header", "required": False,
                                "description": "1: validate and price audioInference tasks without running them.",
                                "schema": {"type": "string", "enum": ["1"]}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "array", "minItems": 1,
                    "items": {"oneOf": [{"$ref": _REF + name} for name in tasks],
                              "discriminator": {"propertyName": "taskType",
                                                "mapping": {t: _REF + f"{_pascal(t)}Task" for t in TASK_TYPES}}}}}}},
                "responses": _envelope_responses({"200": "At least one task succeeded (data), maybe with errors.",
                                                  **errors}),
            }},
            MODEL_SCHEMA_PATH: {"get": {
                "operationId": "modelSchema", "summary": "One model's audioInference task as a JSON Schema",
                "parameters": [{"name": "model", "in": "path", "required": True,
                                "description": "An AIR (e.g. runware:ace-step@v1.5-xl-sft), short name or slug.",
                                "schema": {"type": "string", "enum": [v.air for v in variants]}}],
                "responses": {"200": {"description": "JSON Schema 2020-12.",
                                      "content": {"application/json": {"schema": {"type": "object"}}}},
                              **_envelope_responses({"404": "Unknown model."})},
            }},
            OPENAPI_PATH: {"get": {"operationId": "openapi", "summary": "This document",
                                   "responses": {"200": {"description": "OpenAPI 3.1.",
                                                         "content": {"application/json": {}}}}}},
            DOCS_PATH: {"get": {"operationId": "docs", "summary": "This document, rendered (works offline)",
                                "responses": {"200": {"description": "HTML.", "content": {"text/html": {}}}}}},
            "/docs/api": {"get": {"operationId": "reference", "summary": "The API reference and error codes",
                                  "responses": {"200": {"description": "Markdown.",
                                                        "content": {"text/markdown": {}}}}}},
            "/health": {"get": {"operationId": "health", "summary": "Liveness",
                                "responses": {"200": {"description": "The process answers."}}}},
            "/ready": {"get": {"operationId": "ready", "summary": "Readiness: models loaded, workers alive, "
                               "store writable", "responses": {"200": {"description": "Ready."},
                                                               "503": {"description": "Not ready."}}}},
            "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus text format",
                                 "responses": {"200": {"description": "Metrics.", "content": {"text/plain": {}}}}}},
        },
        "components": {"schemas": {**tasks, **_reply_schemas(codes)}},
    }
    if base_url:
        document["servers"] = [{"url": base_url}]
    return document


# -- routes ----------------------------------------------------------------------------------------

def register_routes(app: FastAPI) -> None:
    """/openapi.json, /docs (with its assets) and the per-model schemas."""
    app.add_api_route(OPENAPI_PATH, openapi_json, methods=["GET"])
    app.add_api_route(DOCS_COMPAT_PATH, openapi_json_for_swagger_ui, methods=["GET"])
    app.add_api_route(DOCS_PATH, docs_page, methods=["GET"])
    app.add_api_route(MODEL_SCHEMA_PATH, model_schema_json, methods=["GET"])
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=swagger_ui_path), name="swagger-ui")


def _document_for(request: Request) -> dict[str, Any]:
    config = request.app.state.cantata.config
    return openapi_document(limits=config.validation_limits(), base_url=config.base_url,
                            served=[VARIANTS[name].air for name in config.models])


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(_document_for(request))


async def openapi_json_for_swagger_ui(request: Request) -> JSONResponse:
    return JSONResponse({**_document_for(request), "openapi": "3.0.3"})


async def model_schema_json(request: Request, model: str) -> JSONResponse:
    config = request.app.state.cantata.config
    try:
        variant = get_variant(model)
    except KeyError:
        known = ", ".join(v.air for v in VARIANTS.values())
        error = RunwareError("notFound", f"No model {model[:100]!r}; known: {known}.", parameter="model",
                             http_status=404)
        return JSONResponse({"errors": [error.to_dict()]}, status_code=404)
    return JSONResponse(model_schema(variant, config.validation_limits(), config.base_url))


async def docs_page(request: Request) -> HTMLResponse:
    return HTMLResponse(_DOCS_HTML)


_DOCS_HTML = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Cantata API</title>
  <link rel="stylesheet" href="{DOCS_ASSETS_PATH}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{DOCS_ASSETS_PATH}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{DOCS_ASSETS_PATH}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{url: "{DOCS_COMPAT_PATH}", dom_id: "#swagger-ui", deepLinking: true}});
  </script>
</body>
</html>
"""
