"""Server-side caps on what one task may ask for.

They sit below every layer that reads them: the configuration builds them from its keys, the API
validator enforces them and documents them (OpenAPI), so neither has to import the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Server-side caps. A deployment may tighten them; loosening past the protocol's own
    bounds (3 results, 300 s, 3000 characters, ttl >= 60) would accept what Runware refuses."""

    max_number_results: int = 3
    max_duration: float = 300.0
    max_prompt_chars: int = 3000
    max_lyrics_chars: int = 3000
    min_ttl: int = 60
    max_ttl: int = 7 * 24 * 3600
