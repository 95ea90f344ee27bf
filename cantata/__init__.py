"""Cantata: ACE-Step 1.5 music generation behind Runware's audioInference protocol."""

__version__ = "0.1.0"
