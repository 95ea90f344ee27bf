"""Runware's `modelSearch` task over what this server can run: the served checkpoints and the
installed adapters (LoRA/LoKr), in Runware's own request and reply shape.

Request (every field optional but taskType/taskUUID): `search` (substring of the name, AIR, tags
or comment, case-insensitive), `tags` (all must match), `category`, `type`, `architecture`,
`conditioning`, `visibility` (public/private/all), `limit` (1..100, default 20), `offset`.
Reply: `{"taskType": "modelSearch", "taskUUID", "results": [model, ...], "totalResults"}`; each
model has Runware's keys (`air`, `name`, `version`, `category`, `architecture`, `tags`,
`private`, `comment`, `type`, `defaultSteps`, `defaultCFG`) and adapters add `baseModel` (the AIR
of the model they were installed for).

The listing is assembled from `catalogue_sources`: a list of callables each returning model
dicts of one category. The 5 Hz LM planner, when served, is category `planner` (a Cantata
extension: Runware has no language-model category), AIR `cantata:ace-step-5hz-lm@<size>`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..models.adapters.registry import LoraRegistry, architecture
from ..models.variants import get_variant, sampling_params
from .errors import RunwareError
from .validation import _check_keys, is_unicode, validate_task_uuid

TASK_TYPE = "modelSearch"
VISIBILITIES = ("public", "private", "all")
MAX_LIMIT, DEFAULT_LIMIT = 100, 20
MAX_SEARCH_CHARS = 200
TEXT_FILTERS = ("type", "architecture", "conditioning")
KEYS = ("taskType", "taskUUID", "search", "tags", "category", *TEXT_FILTERS, "visibility", "limit", "offset")

#: One category of the catalogue: (category name, a function listing its models now).
CatalogueSource = tuple[str, Callable[[], list[dict[str, Any]]]]


def served_checkpoints(models: Sequence[str]) -> CatalogueSource:
    """The checkpoints this server was started with."""
    def listing() -> list[dict[str, Any]]:
        found = []
        for name in models:
            v = get_variant(name)
            params = sampling_params(v)
            found.append({"air": v.air, "name": f"ACE-Step 1.5 {v.name}", "version": v.name, "category": "checkpoint",
                          "architecture": architecture(v), "tags": ["music", "turbo" if v.turbo else "sft"],
                          "private": False, "comment": f"tasks: {', '.join(v.tasks)}", "type": "base",
                          "defaultSteps": params.steps, "defaultCFG": params.guidance_scale})
        return found
    return "checkpoint", listing


def installed_adapters(registry: LoraRegistry) -> CatalogueSource:
    """The adapters of the registry folder (rescanned when it changed: new ones show at once)."""
    def listing() -> list[dict[str, Any]]:
        return [{"air": e.air, "name": e.name, "version": "1", "category": "lora", "architecture": e.architecture,
                 "tags": [e.kind], "private": False, "comment": f"{e.kind} adapter, {e.modules} modules",
                 "type": e.kind, "baseModel": get_variant(e.base).air} for e in registry.entries()]
    return "lora", listing


def served_planner(name: str) -> CatalogueSource:
    """The 5 Hz LM planner every served checkpoint plans with (`settings.thinking`)."""
    def listing() -> list[dict[str, Any]]:
        return [{"air": f"cantata:ace-step-5hz-lm@{name}", "name": f"ACE-Step 1.5 5Hz LM {name}", "version": name,
                 "category": "planner", "architecture": "qwen3", "tags": ["music", "planner"], "private": False,
                 "comment": "completes missing bpm/keyScale/timeSignature; settings.thinking writes audio codes",
                 "type": "planner"}]
    return "planner", listing


def catalogue_sources(models: Sequence[str], registry: LoraRegistry, planner: str | None = None
                      ) -> list[CatalogueSource]:
    """Everything modelSearch lists, one source per category (`planner` only when one is served)."""
    return [served_checkpoints(models), installed_adapters(registry), *([served_planner(planner)] if planner else [])]


def model_search(task: dict, sources: Sequence[CatalogueSource]) -> dict[str, Any]:
    """One validated `modelSearch` task -> its reply item; a `RunwareError` names the bad field."""
    task_uuid = validate_task_uuid(task.get("taskUUID"))
    _check_keys(task, KEYS, "", TASK_TYPE)
    categories = tuple(category for category, _ in sources)
    search = _text(task.get("search"), "search")
    tags = task.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(_text(t, "tags") for t in tags)):
        raise _invalid("tags", "tags must be a list of non-empty strings.", "string[]")
    category = _text(task.get("category"), "category")
    if category is not None and category not in categories:
        raise RunwareError("invalidModelSearch", f"category must be one of {', '.join(categories)}.",
                           parameter="category", type="string", allowed_values=",".join(f"'{c}'" for c in categories))
    filters = {key: _text(task.get(key), key) for key in TEXT_FILTERS}
    visibility = _text(task.get("visibility"), "visibility") or "all"
    if visibility not in VISIBILITIES:
        raise RunwareError("invalidModelSearch", f"visibility must be one of {', '.join(VISIBILITIES)}.",
                           parameter="visibility", type="string",
                           allowed_values=",".join(f"'{v}'" for v in VISIBILITIES))
    limit = _integer(task.get("limit"), "limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
    offset = _integer(task.get("offset"), "offset", 0, 2**31 - 1, 0)

    found = [model for name, listing in sources if category in (None, name) for model in listing()]
    found = [m for m in found if _matches(m, search, tags or [], filters, visibility)]
    return {"taskType": TASK_TYPE, "taskUUID": task_uuid, "results": found[offset:offset + limit],
            "totalResults": len(found)}


def _matches(model: dict[str, Any], search: str | None, tags: list[str], filters: dict[str, str | None],
             visibility: str) -> bool:
    model_tags = [t.lower() for t in model.get("tags", [])]
    if search is not None:
        haystack = " ".join([model["air"], model["name"], model.get("comment", ""), *model_tags]).lower()
        if search.lower() not in haystack:
            return False
    if any(t.lower() not in model_tags for t in tags):
        return False
    if any(value is not None and str(model.get(key, "")).lower() != value.lower() for key, value in filters.items()):
        return False
    return visibility == "all" or model.get("private", False) == (visibility == "private")


def _text(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not (isinstance(value, str) and value.strip() and len(value) <= MAX_SEARCH_CHARS and is_unicode(value)):
        raise _invalid(key, f"{key} must be a string of 1 to {MAX_SEARCH_CHARS} characters.", "string")
    return value


def _integer(value: Any, key: str, lo: int, hi: int, default: int) -> int:
    if value is None:
        return default
    if type(value) is not int or not lo <= value <= hi:
        raise _invalid(key, f"{key} must be an integer between {lo} and {hi}.", "integer")
    return value


def _invalid(parameter: str, message: str, kind: str) -> RunwareError:
    return RunwareError("invalidModelSearch", message, parameter=parameter, type=kind)
