"""LoRA and LoKr adapters for the DiT decoder (lora.md): loading the official formats and
peer files under a strict key map, and applying any mix of them per batch row."""

from .apply import Selection, use_adapters
from .deltas import Adapter
from .errors import AdapterError
from .loading import load_adapter

__all__ = ["Adapter", "AdapterError", "Selection", "load_adapter", "use_adapters"]
