"""Runware's documented ACE-Step example requests, read from their one fixture file."""

from __future__ import annotations

import copy
import json
import uuid
from functools import lru_cache
from pathlib import Path

FILE = Path(__file__).parent / "fixtures" / "runware_examples.json"


@lru_cache
def _examples() -> dict[str, dict]:
    return {name: body for name, body in json.loads(FILE.read_text(encoding="utf-8")).items()
            if not name.startswith("_")}


def docs_example(name: str) -> dict:
    """A fresh copy of example `name` ("garage": XL SFT, "nocturne": XL Base), without taskType/taskUUID."""
    return copy.deepcopy(_examples()[name])


def docs_task(name: str) -> dict:
    """The example as a complete `audioInference` task with a new taskUUID."""
    return {"taskType": "audioInference", "taskUUID": str(uuid.uuid4()), **docs_example(name)}
