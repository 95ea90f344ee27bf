"""The protocol as OpenAPI 3.1 (/openapi.json), its offline rendering (/docs), the per-model JSON
Schemas, and a schemathesis property-based fuzz of the in-process app (dry run): never a 5xx."""

from __future__ import annotations

import copy
import re

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from cantata.api.dispatch import TASK_TYPES
from cantata.api.errors import all_codes
from cantata.api.openapi import DRY_RUN_HEADER, openapi_document
from cantata.api.validation import FIELDS, FieldSpec, validate_audio_inference
from examples import docs_task
from serverkit import app_client, config, server_checkpoints

XL_SFT, TURBO, BASE = "runware:ace-step@v1.5-xl-sft", "runware:ace-step@v1.5-turbo", "runware:ace-step@v1.5-base"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return server_checkpoints(tmp_path_factory)


@pytest.fixture(scope="module")
def client(tmp_path_factory, root):
    with app_client(config(tmp_path_factory.mktemp("openapi"), root), wait_ready=False) as client:
        yield client


@pytest.fixture(scope="module")
def document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    return response.json()


def _property(schema: dict, spec: FieldSpec) -> dict | None:
    """The schema of the field at `spec.path` inside an audioInference schema, or None."""
    node = schema
    for key in spec.path.split("."):
        node = node.get("items", node).get("properties", {}).get(key)
        if node is None:
            return None
    return node


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(copy.deepcopy(document)).validate()
    broken = copy.deepcopy(document)
    broken["paths"]["/v1"]["post"]["responses"] = "none"
    with pytest.raises(jsonschema_rs.ValidationError):  # the validator does check the document
        schemathesis.openapi.from_dict(broken).validate()


def test_every_field_of_the_table_is_documented(document):
    task = document["components"]["schemas"]["AudioInferenceTask"]
    assert set(task["required"]) == {"taskType", "taskUUID", "model", "positivePrompt"}
    for spec in FIELDS:
        schema = _property(task, spec)
        assert schema is not None, spec.path
        assert schema["x-cantata"]["code"] == spec.code and spec.code in schema["description"]
    # ranges, defaults and per-model facts are the table's, not a copy
    props = task["properties"]
    assert (props["steps"]["minimum"], props["steps"]["maximum"]) == (1, 300)
    assert props["steps"]["x-cantata"]["perModel"][TURBO] == {"default": 8, "minimum": 1, "maximum": 20}
    assert props["CFGScale"]["default"] == 7.0 and TURBO not in props["CFGScale"]["x-cantata"]["models"]
    assert props["duration"] | {"x-cantata": None, "description": None} == {
        "type": "number", "minimum": 30.0, "maximum": 300.0, "default": 60.0, "x-cantata": None, "description": None}
    assert props["settings"]["properties"]["task"]["x-cantata"]["models"] == [
        "runware:ace-step@v1.5-xl-base", BASE]
    bitrate = props["audioSettings"]["properties"]["bitrate"]  # over every MP3/OGG layout
    assert bitrate | {"x-cantata": None, "description": None} == {
        "type": "integer", "minimum": 8, "maximum": 500, "x-cantata": None, "description": None}
    assert "192 for MP3 at 48000 Hz, 2 channels" in bitrate["description"]


def test_every_task_type_and_error_code_is_documented(document):
    schemas = document["components"]["schemas"]
    body = document["paths"]["/v1"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    mapping = body["items"]["discriminator"]["mapping"]
    assert set(mapping) == set(TASK_TYPES)
    for task_type, ref in mapping.items():
        assert schemas[ref.rsplit("/", 1)[1]]["properties"]["taskType"]["enum"] == [task_type]
    codes = all_codes()
    assert schemas["Error"]["properties"]["code"]["enum"] == sorted(codes)
    assert all(f"`{code}`" in schemas["Error"]["description"] for code in codes)
    assert {c for spec in FIELDS for c in (spec.code, spec.missing_code) if c} <= set(codes)
    assert set(schemas["Envelope"]["properties"]) == {"data", "errors"}


def test_docs_page_loads_everything_from_the_server(client, document):
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r'url: "([^"]+)"', page.text)
    assert len(assets) >= 4 and all(a.startswith("/") for a in assets), assets  # no CDN, no other host
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 100, asset
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    rendered = client.get(re.search(r'url: "([^"]+)"', page.text).group(1)).json()
    assert rendered["openapi"].startswith("3.0")  # the bundled Swagger UI 4 renders 3.0 documents
    assert {k: v for k, v in rendered.items() if k != "openapi"} == {k: v for k, v in document.items()
                                                                       if k != "openapi"}


def test_per_model_schemas_differ_as_the_models_do(client):
    turbo = client.get(f"/v1/models/{TURBO}/schema.json").json()
    sft = client.get(f"/v1/models/{XL_SFT}/schema.json").json()
    assert turbo["$id"].endswith(f"/v1/models/{TURBO}/schema.json") and turbo["properties"]["model"]["enum"] == [TURBO]
    assert "CFGScale" not in turbo["properties"] and "negativePrompt" not in turbo["properties"]
    assert sft["properties"]["CFGScale"] | {"description": None} == {
        "type": "number", "minimum": 1.0, "maximum": 30.0, "default": 7.0, "description": None}
    assert (turbo["properties"]["steps"]["maximum"], turbo["properties"]["steps"]["default"]) == (20, 8)
    assert (sft["properties"]["steps"]["maximum"], sft["properties"]["steps"]["default"]) == (300, 50)
    assert "guidanceType" not in turbo["properties"]["settings"]["properties"]
    assert sft["properties"]["settings"]["properties"]["guidanceType"]["default"] == "apg"
    assert "advancedFeatures" not in client.get(f"/v1/models/{BASE}/schema.json").json()["properties"]
    assert "task" in client.get("/v1/models/base/schema.json").json()["properties"]["settings"]["properties"]
    assert "x-cantata" not in str(sft)

    # the schema and the validator agree on Runware's documented example and on a turbo CFGScale
    garage = docs_task("garage")
    validate_audio_inference(garage)
    jsonschema_rs.Draft202012Validator(sft).validate(garage)
    turbo_task = {**garage, "model": TURBO, "CFGScale": 7, "negativePrompt": None}
    assert not jsonschema_rs.Draft202012Validator(turbo).is_valid(turbo_task)

    missing = client.get("/v1/models/runware:ace-step@v9/schema.json")
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "notFound"


def test_the_document_follows_the_served_limits():
    from cantata.limits import Limits

    props = openapi_document(limits=Limits(max_duration=120.0, max_number_results=1))["components"]["schemas"][
        "AudioInferenceTask"]["properties"]
    assert (props["duration"]["maximum"], props["duration"]["default"], props["numberResults"]["maximum"]) == \
        (120.0, 60.0, 1)


# -- schemathesis: property-based fuzz of every operation, in process, dry run --------------------------

#: Examples per operation and mode: the task endpoint gets the most, the fixed GETs a few.
FUZZ_EXAMPLES = {"/v1": 120, "/v1/models/{model}/schema.json": 15}


def test_fuzz_never_a_server_error(tmp_path_factory, root):
    """Schemathesis generates valid (positive) and invalid (negative) requests for every operation of
    /openapi.json and sends them to the ASGI app in process, dry run: not one may get a 5xx."""
    from cantata.api.app import create_app

    app = create_app(config(tmp_path_factory.mktemp("openapi-fuzz"), root))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    statuses: dict[int, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        if operation.body or operation.path_parameters:
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            @given(case=operation.as_strategy(mode))
            @settings(max_examples=FUZZ_EXAMPLES.get(operation.path, 3), deadline=None, derandomize=True,
                      database=None, suppress_health_check=list(HealthCheck))
            def call(case):
                response = case.call(headers={DRY_RUN_HEADER: "1"})
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                assert response.status_code < 500, (case.as_curl_command(), response.status_code, response.text[:500])

            call()
    assert statuses.get(200, 0) > 20 and statuses.get(400, 0) > 20, statuses  # both sides of the validator
