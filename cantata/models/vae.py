"""The 48 kHz stereo Oobleck VAE (25 latent frames per second, 64 channels)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderOobleck


def load_vae(path: Path, device: torch.device, dtype: torch.dtype) -> AutoencoderOobleck:
    vae = AutoencoderOobleck.from_pretrained(path, torch_dtype=dtype)
    return vae.to(device).eval().requires_grad_(False)


def hop_length(vae: AutoencoderOobleck) -> int:
    """Audio samples per latent frame (1920 for the official VAE)."""
    hop = 1
    for r in vae.config.downsampling_ratios:
        hop *= r
    return hop
