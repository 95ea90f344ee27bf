"""The error catalogue and the exception tree: one base, one code list, one translation.

Every code a layer emits must be in `cantata.errors.CATALOGUE`: a `CantataError` refuses any
other at construction, and the scan below finds every code written into the source at the
places codes are given (exception constructors, `error`/`fail` helpers, `code = ...`,
`{"code": ...}`), so a typo fails here rather than in front of a client.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cantata.api.errors import (DEFAULT_DOCS_BASE, ERROR_CODES, RunwareError, TaskFailure, all_codes,
                                runware_error)
from cantata.audio.codecs import AudioEncodeError
from cantata.audio.decode import AudioDecodeError
from cantata.errors import CATALOGUE, CantataError, known
from cantata.jobs.inputs import InputError
from cantata.outbound import OutboundError
from cantata.pipeline.request import GenerationFailed

PACKAGE = Path(__file__).resolve().parents[1] / "cantata"
CODE_SHAPE = re.compile(r"[a-z]+[A-Z][A-Za-z]*")

# -- the catalogue -----------------------------------------------------------------------------


def test_catalogue_entries_are_well_formed():
    for code, entry in CATALOGUE.items():
        assert CODE_SHAPE.fullmatch(code), code
        assert entry.status in (None, 400, 401, 404, 405, 413, 415, 429, 431, 500, 503), code
        assert entry.description.strip() and entry.description.endswith("."), code
        assert not entry.validation or entry.status == 400, code


def test_all_codes_and_the_validation_view_read_the_catalogue():
    assert all_codes() == {code: entry.description for code, entry in CATALOGUE.items()}
    assert set(ERROR_CODES) == {code for code, entry in CATALOGUE.items() if entry.validation}
    assert {"invalidBpm", "missingTaskType", "invalidTaskObject"} <= set(ERROR_CODES)
    assert not {"taskNotFound", "inferenceError", "urlNotAllowed"} & set(ERROR_CODES)


@pytest.mark.parametrize("code,status", [
    ("missingApiKey", 401), ("maxRequestSizeExceeded", 413), ("unsupportedContentType", 415),
    ("taskNotFound", 404), ("methodNotAllowed", 405), ("rateLimitExceeded", 429), ("internalServerError", 500),
    ("serviceUnavailable", 503), ("urlNotAllowed", 400), ("invalidAudioTooLarge", 400), ("invalidBpm", 400),
    ("inferenceError", None), ("syncWaitTimeout", None), ("urlTimeout", None), ("invalidAudioFormat", None),
])
def test_http_status_or_task_outcome_per_code(code, status):
    assert CATALOGUE[code].status == status


# -- one base, codes checked at construction ---------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda code: CantataError(code, "m"),
    lambda code: RunwareError(code, "m", parameter="settings.bpm"),
    lambda code: InputError(code, "m", "inputs.audio"),
    lambda code: OutboundError(code, "m", status_code=500),
    lambda code: AudioDecodeError(code, "m"),
])
def test_an_unknown_code_is_refused_at_construction(make):
    with pytest.raises(ValueError, match="'invalidBPM' is not in cantata.errors.CATALOGUE"):
        make("invalidBPM")
    assert make("invalidAudioFormat").code == "invalidAudioFormat"


def test_every_coded_exception_shares_the_base():
    errors = [
        InputError("mediaNotFound", "gone", "inputs.audio"),
        OutboundError("urlHttpError", "http://x answered HTTP 502", status_code=502),
        AudioDecodeError("invalidAudioEmpty", "audio is empty (0 bytes)"),
        AudioEncodeError("unsupported channel count 3; expected 1 or 2"),
        GenerationFailed("the model produced silent audio"),
        RunwareError("invalidBpm", "bpm must be an integer.", parameter="settings.bpm"),
    ]
    for err in errors:
        assert isinstance(err, CantataError)
        assert err.code in CATALOGUE and str(err) == err.message
    assert [e.code for e in errors[3:5]] == ["inferenceError", "inferenceError"]
    assert errors[0].parameter == "inputs.audio" and errors[1].status_code == 502
    # What callers outside the API relied on before the tree existed still holds.
    assert isinstance(errors[2], ValueError) and isinstance(errors[3], ValueError)
    assert isinstance(errors[4], RuntimeError)


def test_known_returns_the_code_or_names_the_stranger():
    assert known("taskInterrupted") == "taskInterrupted"
    with pytest.raises(ValueError, match="'taskLost'"):
        known("taskLost")


def test_stored_record_round_trip():
    err = InputError("urlTimeout", "http://x took longer than 30 s", "inputs.referenceAudios")
    record = err.record()
    assert record == {"code": "urlTimeout", "message": "http://x took longer than 30 s",
                      "parameter": "inputs.referenceAudios"}
    back = CantataError.from_record(record)
    assert (back.code, back.message, back.parameter) == (err.code, err.message, err.parameter)
    assert CantataError("taskCancelled", "cancelled").record() == {"code": "taskCancelled", "message": "cancelled"}


# -- the one translation to the wire -----------------------------------------------------------


def test_runware_error_translates_a_lower_layer_failure():
    err = runware_error(InputError("mediaNotFound", "no media 1234", "inputs.audio"), docs_base="http://h:1/")
    assert type(err) is RunwareError and err.http_status == 404
    assert err.to_dict() == {"code": "mediaNotFound", "message": "no media 1234", "parameter": "inputs.audio",
                             "documentation": "http://h:1/docs/api#request-inputs-audio"}


def test_runware_error_without_a_field_links_the_code_list():
    err = runware_error(CantataError("rateLimitExceeded", "queue full"), task_type="audioInference", task_uuid="u")
    assert err.http_status == 429
    assert err.to_dict() == {"code": "rateLimitExceeded", "message": "queue full", "taskType": "audioInference",
                             "taskUUID": "u", "documentation": f"{DEFAULT_DOCS_BASE}/docs/api#errors"}


def test_outcome_codes_are_400_when_refused_up_front_and_200_as_a_task_failure():
    refused = runware_error(InputError("invalidAudioEmpty", "audio is empty (0 bytes)", "media"))
    assert refused.http_status == 400
    failed = runware_error(GenerationFailed("the model produced silent audio"), task_failure=True,
                           task_type="audioInference", task_uuid="u")
    assert isinstance(failed, TaskFailure) and failed.http_status == 200
    assert failed.to_dict()["status"] == "error" and failed.to_dict()["code"] == "inferenceError"
    assert runware_error(CantataError("syncWaitTimeout", "wait"), http_status=200).http_status == 200


def test_a_runware_error_passes_through_unchanged():
    original = RunwareError("invalidBpm", "bpm must be in 30..300.", parameter="settings.bpm", type="integer",
                            allowed_values=[30, 300])
    assert runware_error(original, docs_base="http://other") is original
    assert original.http_status == 400 and original.to_dict()["allowedValues"] == [30, 300]


# -- every code in the source is in the catalogue ----------------------------------------------

#: Callables whose argument at this position is an error code.
_CODE_ARGUMENT = {"CantataError": 0, "RunwareError": 0, "TaskFailure": 0, "InputError": 0, "OutboundError": 0,
                  "AudioDecodeError": 0, "error": 0, "known": 0, "count_error": 0, "_finish_error": 1}


def _callee(call: ast.Call) -> tuple[str | None, bool]:
    if isinstance(call.func, ast.Name):
        return call.func.id, False
    if isinstance(call.func, ast.Attribute):
        return call.func.attr, True
    return None, False


def _code_expressions(tree: ast.Module):
    """Expressions that give an error code, wherever the source hands one over."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name, is_method = _callee(node)
            # `fail(code, message)` is the transports' alias of Dispatcher.error; `sink.fail(uuid, code, ...)`
            # is a worker reporting a task's failure.
            position = (1 if is_method else 0) if name == "fail" else _CODE_ARGUMENT.get(name)
            if position is not None and len(node.args) > position:
                yield node.args[position]
            yield from (kw.value for kw in node.keywords if kw.arg == "code")
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "code" for t in node.targets):
            yield node.value
        elif isinstance(node, ast.Dict):
            yield from (v for k, v in zip(node.keys, node.values)
                        if isinstance(k, ast.Constant) and k.value == "code")


def _strings(expr: ast.expr, constants: dict[str, str]):
    """The codes an expression can evaluate to: a literal or module constant, either branch of
    `a if c else b`, and a `{...}.get(key, default)` table's values and default. A subscript, a
    nested object or another call (`FIELD[path].code`, a JSON schema, `kv(event, ...)`) is
    something else."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        yield expr.value
    elif isinstance(expr, ast.Name) and expr.id in constants:
        yield constants[expr.id]
    elif isinstance(expr, ast.IfExp):
        yield from _strings(expr.body, constants)
        yield from _strings(expr.orelse, constants)
    elif isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "get":
        table = expr.func.value
        for value in table.values if isinstance(table, ast.Dict) else []:
            yield from _strings(value, constants)
        for arg in expr.args[1:]:
            yield from _strings(arg, constants)


def _emitted_codes() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                     and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                     for t in n.targets if isinstance(t, ast.Name) and t.id.isupper()}
        for expr in _code_expressions(tree):
            for text in _strings(expr, constants):
                found.setdefault(text, set()).add(str(path.relative_to(PACKAGE.parent)))
    return found


def test_every_code_written_in_the_source_is_in_the_catalogue():
    found = _emitted_codes()
    unknown = {code: sorted(where) for code, where in found.items() if code not in CATALOGUE}
    assert not unknown, f"codes missing from cantata.errors.CATALOGUE: {unknown}"
    # The scan really sees the emitting layers (a scan that found nothing would pass vacuously).
    assert {"urlNotAllowed", "invalidAudioFormat", "mediaNotFound", "taskInterrupted", "inferenceError",
            "conflictTaskUUID", "invalidJSON", "missingApiKey", "notFound", "uploadFailed"} <= set(found)
    assert len(found) >= 30


# -- layering: the error base and the log format sit below every layer -------------------------


def _cantata_imports(path: Path) -> set[str]:
    """Absolute names of the cantata modules `path` imports."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n == "cantata" or n.startswith("cantata.")}


def test_errors_and_logfmt_import_nothing_from_cantata():
    assert _cantata_imports(PACKAGE / "errors.py") == set()
    assert _cantata_imports(PACKAGE / "logfmt.py") == set()


def test_nothing_below_the_api_imports_it():
    for path in PACKAGE.rglob("*.py"):
        layer = path.relative_to(PACKAGE).parts[0]
        if layer in ("api", "cli.py"):
            continue
        upward = {n for n in _cantata_imports(path) if n.startswith("cantata.api")}
        assert not upward, f"{path.relative_to(PACKAGE.parent)} imports {sorted(upward)}"


def test_the_transports_do_not_import_the_app():
    for name in ("http.py", "ws.py", "media.py", "services.py", "sessions.py", "dispatch.py"):
        assert not {n for n in _cantata_imports(PACKAGE / "api" / name) if n.startswith("cantata.api.app")}, name


@pytest.mark.parametrize("module", ["cantata.api.ws", "cantata.api.http", "cantata.api.services"])
def test_each_api_module_imports_on_its_own(module):
    """No import circle: a fresh interpreter can import the transport before the app."""
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, timeout=120)
