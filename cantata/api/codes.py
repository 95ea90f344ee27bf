"""Old import path of the server-side codes; the catalogue is `cantata.errors`. Removed once no importer is left."""

from __future__ import annotations

from typing import Any

from ..errors import CATALOGUE, CantataError
from .errors import DEFAULT_DOCS_BASE, RunwareError, TaskFailure, all_codes, runware_error  # noqa: F401

SERVER_ERROR_CODES: dict[str, tuple[int | None, str]] = {
    code: (entry.status, entry.description) for code, entry in CATALOGUE.items() if not entry.validation}


def server_error(code: str, message: str, *, parameter: str | list[str] | None = None,
                 docs_base: str = DEFAULT_DOCS_BASE, **kw: Any) -> RunwareError:
    return runware_error(CantataError(code, message, parameter=parameter), docs_base=docs_base, **kw)
