"""key=value log lines, so one grep for `taskUUID=...` follows a task through every layer (hence a
module at the bottom of the tree, which every layer may import)."""

from __future__ import annotations

import json


def kv(event: str, **fields: object) -> str:
    """`event=<event> k=v ...`; values with spaces, quotes or '=' are JSON-quoted, None is left out."""
    parts = [f"event={event}"]
    for key, value in fields.items():
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        if not text or any(c in text for c in ' "=\n\t'):
            text = json.dumps(text, ensure_ascii=False)
        parts.append(f"{key}={text}")
    return " ".join(parts)
