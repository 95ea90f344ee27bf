"""The exact strings the DiT was trained on (model.md §6).

The section labels and newlines are load-bearing: the Qwen3 encoder sees them verbatim, so any
drift (a missing newline, "4/4" instead of "4") changes the conditioning.
"""

from __future__ import annotations

import re

from ..models.vocabulary import ACCIDENTALS, MODES, NOTES

ENDOFTEXT = "<|endoftext|>"

INSTRUCTIONS = {
    "text2music": "Fill the audio semantic mask based on the given conditions:",
    "repaint": "Repaint the mask area based on the given conditions:",
    "cover": "Generate audio semantic tokens based on the given conditions:",
}

_KEY_RE = re.compile(rf"^([{NOTES}])([{''.join(ACCIDENTALS)}]?)\s+({'|'.join(MODES)})$", re.IGNORECASE)


def instruction_for(task: str, track_name: str | None = None, track_classes: list[str] | None = None) -> str:
    """Task instruction, the first block of the caption prompt."""
    if task in INSTRUCTIONS:
        return INSTRUCTIONS[task]
    if task == "extract":
        return f"Extract the {track_name.upper()} track from the audio:" if track_name else "Extract the track from the audio:"
    if task == "lego":
        return (f"Generate the {track_name.upper()} track based on the audio context:" if track_name
                else "Generate the track based on the audio context:")
    if task == "complete":
        if track_classes:
            return f"Complete the input track with {' | '.join(c.upper() for c in track_classes)}:"
        return "Complete the input track:"
    raise ValueError(f"unknown task {task!r}")


def normalize_keyscale(key: str | None) -> str | None:
    """'f# MINOR' -> 'F# minor'; '' or None -> None (the model decides). Accidentals are kept as
    written (#, b, ♯, ♭), as the official code passes them through."""
    if key is None or not key.strip():
        return None
    m = _KEY_RE.match(key.strip())
    if not m:
        raise ValueError(f"invalid key {key!r}: expected '<A-G>[#|b|♯|♭] <major|minor>', e.g. 'F# minor'")
    note, acc, mode = m.groups()
    return f"{note.upper()}{acc} {mode.lower()}"


def metas_string(bpm: int | None, timesignature: int | None, keyscale: str | None, duration: float) -> str:
    """Four lines, this order; missing values read N/A and the duration is truncated to seconds."""
    return (
        f"- bpm: {bpm if bpm is not None else 'N/A'}\n"
        f"- timesignature: {timesignature if timesignature is not None else 'N/A'}\n"
        f"- keyscale: {keyscale if keyscale else 'N/A'}\n"
        f"- duration: {int(duration)} seconds\n"
    )


def caption_prompt(instruction: str, caption: str, metas: str) -> str:
    return f"# Instruction\n{instruction}\n\n# Caption\n{caption}\n\n# Metas\n{metas}{ENDOFTEXT}\n"


def lyric_prompt(lyrics: str, language: str) -> str:
    """Instrumentals are written as the literal tag `[Instrumental]`, as in the official UI."""
    return f"# Languages\n{language}\n\n# Lyric\n{lyrics or '[Instrumental]'}{ENDOFTEXT}"
