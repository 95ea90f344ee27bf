"""Every prompt the planner is given, character for character (lm.md §2.3, §3, §5.2).

The chat template renders every planner prompt the same way (system + user, generation prompt
appended, no `enable_thinking`), so it is written out here instead of going through Jinja.
"""

from __future__ import annotations

from typing import Any

import yaml

GENERATE = "Generate audio semantic tokens based on the given conditions:"
UNDERSTAND = "Understand the given musical conditions and describe the audio semantics accordingly:"
INSPIRE = "Expand the user's input into a more detailed and specific musical description:"
FORMAT = "Format the user's input into a more detailed and specific musical description:"

#: The unconditional user message of the codes phase, and the negative prompt that means "none".
NO_USER_INPUT = "NO USER INPUT"
#: The fields of the CoT block, in the order the FSM writes them (genres only when understanding).
COT_FIELDS = ("bpm", "caption", "duration", "keyscale", "language", "timesignature")


def chat(instruction: str, user: str) -> str:
    return (f"<|im_start|>system\n# Instruction\n{instruction}\n\n<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")


def meaningful_negative(negative_prompt: str | None) -> bool:
    """Official rule: a negative prompt counts when non-blank and not the default placeholder."""
    return bool(negative_prompt and negative_prompt.strip() and negative_prompt.strip() != NO_USER_INPUT)


def _caption_and_lyrics(caption: str, lyrics: str) -> str:
    return f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"


def cot_prompt(caption: str, lyrics: str) -> str:
    """Metadata phase; the model writes `<think>\\n…` itself (the FSM forces it)."""
    return chat(GENERATE, _caption_and_lyrics(caption, lyrics))


def cot_unconditional_prompt(lyrics: str, negative_prompt: str | None) -> str:
    """Only needed if the metadata phase ran with CFG, which `generate_music` never does."""
    if meaningful_negative(negative_prompt):
        return chat(GENERATE, _caption_and_lyrics(negative_prompt, lyrics))
    return chat(GENERATE, f"# Lyric\n{lyrics}\n")


def codes_prompt(caption: str, lyrics: str, cot_text: str) -> str:
    """The user's original caption and lyrics, then the CoT block; the first code follows the blank line."""
    return cot_prompt(caption, lyrics) + cot_text + "\n\n"


def codes_unconditional_prompt(negative_prompt: str | None) -> str:
    """No caption, no lyrics: the negative prompt (or `NO USER INPUT`) and an empty reasoning block."""
    user = negative_prompt if meaningful_negative(negative_prompt) else NO_USER_INPUT
    return chat(GENERATE, user) + "<think>\n\n</think>\n\n"


def understand_prompt(codes: list[int]) -> str:
    return chat(UNDERSTAND, "".join(f"<|audio_code_{c}|>" for c in codes))


def inspiration_prompt(query: str, instrumental: bool) -> str:
    return chat(INSPIRE, f"{query or NO_USER_INPUT}\n\ninstrumental: {'true' if instrumental else 'false'}")


def format_prompt(caption: str, lyrics: str) -> str:
    """No trailing newline after the lyrics here, unlike the generation prompts."""
    return chat(FORMAT, f"# Caption\n{caption or NO_USER_INPUT}\n\n# Lyric\n{lyrics or '[Instrumental]'}")


def cot_block(metadata: dict[str, Any]) -> str:
    """`<think>\\n{yaml}\\n</think>` with PyYAML's rules (sorted keys, quoting, 80-column folding);
    a time signature `N/4` is written as N and digit-only strings as numbers, as officially."""
    items: dict[str, Any] = {}
    for key in COT_FIELDS:
        value = metadata.get(key)
        if value is None:
            continue
        if key == "timesignature" and isinstance(value, str) and value.endswith("/4"):
            value = value.split("/")[0]
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        items[key] = value
    body = yaml.dump(items, allow_unicode=True, sort_keys=True).strip() if items else ""
    return f"<think>\n{body}\n</think>"
