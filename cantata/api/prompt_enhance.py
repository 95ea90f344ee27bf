"""Runware's `promptEnhance` task: validation and the reply items (the planner does the work).

Request `{taskType, taskUUID, prompt, promptMaxLength?, promptVersions?, includeCost?}`; reply:
one item per version, `{taskType, taskUUID, text, cost?}` (Runware's shape). The bounds are
Runware's: prompt 1-300 characters, promptMaxLength 12-400 characters (default 380),
promptVersions 1-5 (default 1). What the text is (the planner's caption from its metadata phase)
is `cantata.pipeline.enhance`'s business; this module only speaks the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import RunwareError
from .validation import _check_keys, is_unicode, validate_task_uuid

TASK_TYPE = "promptEnhance"
KEYS = ("taskType", "taskUUID", "prompt", "promptMaxLength", "promptVersions", "includeCost")
PROMPT_CHARS = (1, 300)
MAX_LENGTH = (12, 400)
DEFAULT_MAX_LENGTH = 380
VERSIONS = (1, 5)
DEFAULT_VERSIONS = 1


@dataclass(frozen=True)
class PromptEnhanceTask:
    task_uuid: str
    prompt: str
    max_length: int
    versions: int
    include_cost: bool


def validate_prompt_enhance(task: dict[str, Any]) -> PromptEnhanceTask:
    """The task, checked field by field; a `RunwareError` names the first bad one."""
    task_uuid = validate_task_uuid(task.get("taskUUID"))
    _check_keys(task, KEYS, "", TASK_TYPE)
    prompt = task.get("prompt")
    if prompt is None:
        raise RunwareError("missingPrompt", "prompt is required: the text to enhance.", parameter="prompt",
                           type="string")
    lo, hi = PROMPT_CHARS
    if not (isinstance(prompt, str) and prompt.strip() and len(prompt) <= hi and is_unicode(prompt)):
        raise RunwareError("invalidPrompt", f"prompt must be a string of {lo} to {hi} characters.",
                           parameter="prompt", type="string")
    max_length = _integer(task.get("promptMaxLength"), "promptMaxLength", "invalidPromptMaxLength",
                          MAX_LENGTH, DEFAULT_MAX_LENGTH)
    versions = _integer(task.get("promptVersions"), "promptVersions", "invalidPromptVersions", VERSIONS,
                        DEFAULT_VERSIONS)
    include_cost = task.get("includeCost", False)
    if include_cost is None:
        include_cost = False
    if not isinstance(include_cost, bool):
        raise RunwareError("invalidIncludeCost", "includeCost must be a boolean.", parameter="includeCost",
                           type="boolean")
    return PromptEnhanceTask(task_uuid, prompt, max_length, versions, include_cost)


def reply_items(task: PromptEnhanceTask, texts: list[str], cost: float | None) -> list[dict[str, Any]]:
    """One item per version; with includeCost the whole task's cost is shared evenly between them."""
    items = []
    for text in texts:
        item: dict[str, Any] = {"taskType": TASK_TYPE, "taskUUID": task.task_uuid, "text": text}
        if task.include_cost and cost is not None:
            item["cost"] = round(cost / len(texts), 5)
        items.append(item)
    return items


def _integer(value: Any, key: str, code: str, bounds: tuple[int, int], default: int) -> int:
    if value is None:
        return default
    lo, hi = bounds
    if type(value) is not int or not lo <= value <= hi:
        raise RunwareError(code, f"{key} must be an integer between {lo} and {hi}.", parameter=key, type="integer")
    return value
