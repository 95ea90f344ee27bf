"""The Runware error object: the `errors[]` item clients parse, and the one place a coded failure
becomes one.

Runware clients (SDKs, CLI) read `code`, `message`, `parameter`, `type`, `taskType`, `taskUUID`,
`documentation` and `allowedValues` from each error. The codes, their HTTP statuses and their
naming rules are the catalogue's (`cantata.errors`); every layer below the API raises a
`CantataError`, and `runware_error` turns it into a `RunwareError` with the documentation link,
the task it belongs to and the HTTP status a reply carrying only it should use.
"""

from __future__ import annotations

import re

from typing import Any

from ..errors import CATALOGUE, CantataError, all_codes

__all__ = ["DEFAULT_DOCS_BASE", "ERROR_CODES", "RunwareError", "TaskFailure", "all_codes", "documentation_url",
           "runware_error"]

DEFAULT_DOCS_BASE = "http://localhost:8080"

#: The codes audioInference task validation reports, with what each means (a view of the catalogue).
ERROR_CODES: dict[str, str] = {code: entry.description for code, entry in CATALOGUE.items() if entry.validation}


_LIST_INDEX = re.compile(r"\[\d+\]")


def documentation_url(parameter: str | list[str] | None, docs_base: str = DEFAULT_DOCS_BASE) -> str:
    """Link to our API reference, anchored the way Runware anchors its own (`settings.bpm` ->
    `#request-settings-bpm`), so a client that follows the link lands on the field."""
    page = f"{docs_base.rstrip('/')}/docs/api"
    first = parameter[0] if isinstance(parameter, list) and parameter else parameter
    if not isinstance(first, str):
        return page
    field = _LIST_INDEX.sub("", first)  # lora[0].model -> lora.model
    return f"{page}#request-{field.replace('.', '-').lower()}"


class RunwareError(CantataError):
    """One failed task, as Runware reports it. `http_status` is what a REST reply carrying only
    this error should use: the catalogue's status for the code unless given (400 for a task
    outcome refused while the task was being accepted)."""

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
        http_status: int | None = None,
    ) -> None:
        super().__init__(code, message, parameter=parameter)
        self.type = type
        self.allowed_values = allowed_values
        self.task_type = task_type
        self.task_uuid = task_uuid
        self.documentation = documentation
        self.http_status = http_status or CATALOGUE[code].status or 400

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


class TaskFailure(RunwareError):
    """A task's own failure, as getResponse, sync replies and webhooks report it: `status: "error"`,
    HTTP 200 (the request that asked about it was fine)."""

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "status": "error"}


def runware_error(error: CantataError, *, docs_base: str = DEFAULT_DOCS_BASE, task_type: str | None = None,
                  task_uuid: str | None = None, task_failure: bool = False, http_status: int | None = None,
                  **extra: Any) -> RunwareError:
    """The Runware error object for a coded failure from any layer; the only translation there is.

    A `RunwareError` (task validation builds its own, with `type` and `allowedValues`) is kept as
    it is. Otherwise the documentation link points at the field, or at the code list when no
    field is named; a task failure (`task_failure`) is reported with HTTP 200."""
    if isinstance(error, RunwareError):
        return error
    cls = TaskFailure if task_failure else RunwareError
    documentation = (documentation_url(error.parameter, docs_base) if error.parameter else
                     f"{docs_base.rstrip('/')}/docs/api#errors")
    return cls(error.code, error.message, parameter=error.parameter, task_type=task_type, task_uuid=task_uuid,
               documentation=documentation, http_status=http_status or (200 if task_failure else None), **extra)
