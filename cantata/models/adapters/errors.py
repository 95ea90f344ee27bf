"""The one exception adapter loading and application raise."""

from __future__ import annotations

from ..checkpoint import CheckpointError


class AdapterError(CheckpointError):
    """An adapter file or directory cannot be used: wrong layout, a key that names no module of
    the decoder or is not used, a shape that does not fit the base model, an unsupported option.
    The message names the offending key as it is spelled in the file."""
