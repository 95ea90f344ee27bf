"""What a test does when something it needs from outside (an SDK, a service) cannot be had.

Locally it skips with the reason; under CI (`CI=true`) `.ci/run` is responsible for providing
everything, so a missing piece is a failure there, never a quiet skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    if under_ci():
        pytest.fail(f"{reason} (CI must provide it)", pytrace=False)
    pytest.skip(reason)
