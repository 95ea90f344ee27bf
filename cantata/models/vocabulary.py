"""The words the ACE-Step models understand and the names of their sampler options, defined once.

The pipeline writes them into the prompts the DiT was trained on (model.md §6) and picks the
repaint and guidance behaviour by them; the API validates requests against them and documents
them. Both read this module, so a word can only be added or removed here.
"""

from __future__ import annotations

#: Stems for lego/extract (`trackName`) and complete (`trackClasses`), in the official order.
TRACK_NAMES = (
    "woodwinds", "brass", "fx", "synth", "strings", "percussion",
    "keyboard", "guitar", "bass", "drums", "backing_vocals", "vocals",
)

#: The 51 vocal language codes of the official UI ("unknown" for instrumentals).
VOCAL_LANGUAGES = tuple(
    "ar az bg bn ca cs da de el en es fa fi fr he hi hr ht hu id is it ja ko la lt ms ne nl no "
    "pa pl pt ro ru sa sk sr sv sw ta te th tl tr uk ur vi yue zh unknown".split()
)
DEFAULT_VOCAL_LANGUAGE = "en"

#: Beats per bar the captions were trained with ("- timesignature: 4").
TIME_SIGNATURES = (2, 3, 4, 6)

#: Key scales: "<Note><accidental> <mode>"; the 70 combinations in api.md §2.2's order.
NOTES = "ABCDEFG"
ACCIDENTALS = ("", "#", "b", "♯", "♭")
MODES = ("major", "minor")
KEY_SCALES = tuple(f"{note}{acc} {mode}" for note in NOTES for acc in ACCIDENTALS for mode in MODES)

#: Guidance: adaptive projected (the official default) or plain classifier-free; "none" is what
#: models distilled to run without guidance (turbo) use.
APG = "apg"
CFG = "cfg"
GUIDANCE_TYPES = (APG, CFG)
NO_GUIDANCE = "none"

#: How strictly a repaint keeps the audio outside its window (pipeline.tasks gives each its numbers).
CONSERVATIVE = "conservative"
BALANCED = "balanced"
AGGRESSIVE = "aggressive"
REPAINT_MODES = (CONSERVATIVE, BALANCED, AGGRESSIVE)
DEFAULT_REPAINT_MODE = BALANCED

#: Memory tiers: what stays on the GPU (`models.speed.memory` implements them), from the most
#: resident to the last resort; "auto" picks the highest that fits.
MEMORY_TIERS = ("high", "balanced", "low", "offload")
MEMORY_CHOICES = ("auto", *MEMORY_TIERS)
