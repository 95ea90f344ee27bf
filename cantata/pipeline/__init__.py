"""Generation: a validated request in, decoded audio out. Knows nothing of HTTP or file formats."""

from .pipeline import CantataPipeline
from .request import (GenerationCancelled, GenerationFailed, GenerationRequest, GenerationResult,
                      SourceAudio)

__all__ = ["CantataPipeline", "GenerationCancelled", "GenerationFailed", "GenerationRequest",
           "GenerationResult", "SourceAudio"]
