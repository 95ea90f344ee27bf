"""Reading the planner's output text (lm.md §5.2), as the official parser does.

The metadata comes from the text between `<think>` and `</think>`, or, when there is no such
pair (always in the metadata phase, which ends with EOS instead of `</think>`), from everything
before the first audio-code substring: a caption that contains an audio-code token loses every
field after it, officially, and so here.
"""

from __future__ import annotations

import re
from typing import Any

from .tokenizer import VALID_CODES

CODE_RE = re.compile(r"<\|audio_code_(\d+)\|>")
THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
INT_FIELDS = ("bpm", "duration")
TEXT_FIELDS = ("genres", "keyscale", "language", "timesignature")


def audio_codes(text: str) -> list[int]:
    """Every `<|audio_code_k|>` in order, clamped to the 64 000 valid codes."""
    return [min(int(k), VALID_CODES - 1) for k in CODE_RE.findall(text)]


def parse_metadata(text: str) -> dict[str, Any]:
    match = THINK_RE.search(text)
    reasoning = match.group(1).strip() if match else text.split("<|audio_code_")[0].strip()
    metadata: dict[str, Any] = {}
    key, lines = None, []

    def save() -> None:
        if not key or not lines:
            return
        value = "\n".join(lines)
        if key in INT_FIELDS:
            try:
                metadata[key] = int(value.strip())
            except ValueError:
                metadata[key] = value.strip()
        elif key == "caption":
            metadata[key] = " ".join(s for s in (line.strip() for line in value.split("\n")) if s)
        elif key in TEXT_FIELDS:
            metadata[key] = value.strip()

    for line in reasoning.split("\n"):
        if line.strip().startswith("<"):
            continue
        if line and not line[0].isspace() and ":" in line:
            save()
            name, first = line.split(":", 1)
            key, lines = name.strip().lower(), ([first] if first.strip() else [])
        elif line.startswith((" ", "\t")) and key:
            lines.append(line)
    save()
    return metadata
