"""Read an official ACE-Step DiT `config.json` into constructor arguments for diffusers' modules.

Every size comes from the file; nothing is hard-coded, so the same code loads the real XL
checkpoint and the tiny test checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DitConfig:
    raw: dict[str, Any]

    @classmethod
    def from_file(cls, path: str | Path) -> "DitConfig":
        return cls(json.loads(Path(path).read_text()))

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    # -- derived facts -------------------------------------------------------------------

    @property
    def is_xl(self) -> bool:
        """XL checkpoints carry the separate encoder widths (2B configs lack them)."""
        auto_model = (self.get("auto_map") or {}).get("AutoModel", "")
        return "_xl_" in auto_model or "encoder_hidden_size" in self.raw

    @property
    def is_turbo(self) -> bool:
        return bool(self.get("is_turbo", False)) or self.get("model_version") == "turbo"

    @property
    def encoder_width(self) -> int:
        return self.get("encoder_hidden_size") or self.raw["hidden_size"]

    def _shared(self, num_layers: int) -> dict[str, Any]:
        """Arguments common to every attention stack (DiT and encoder side)."""
        # Official encoders index the DiT's `layer_types` list; fall back to the default
        # alternation (sliding first) where the list is absent or shorter than the stack.
        given = list(self.get("layer_types") or [])
        layer_types = [
            given[i] if i < len(given) else ("sliding_attention" if i % 2 == 0 else "full_attention")
            for i in range(num_layers)
        ]
        return dict(
            head_dim=self.raw["head_dim"],
            rope_theta=float(self.get("rope_theta", 1_000_000.0)),
            attention_bias=bool(self.get("attention_bias", False)),
            attention_dropout=float(self.get("attention_dropout", 0.0)),
            rms_norm_eps=float(self.get("rms_norm_eps", 1e-6)),
            sliding_window=self.get("sliding_window", 128),
            layer_types=layer_types,
        )

    def _encoder_widths(self) -> dict[str, Any]:
        return dict(
            hidden_size=self.encoder_width,
            intermediate_size=self.get("encoder_intermediate_size") or self.raw["intermediate_size"],
            num_attention_heads=self.get("encoder_num_attention_heads") or self.raw["num_attention_heads"],
            num_key_value_heads=self.get("encoder_num_key_value_heads") or self.raw["num_key_value_heads"],
        )

    # -- constructor kwargs per diffusers module ------------------------------------------

    def transformer_kwargs(self) -> dict[str, Any]:
        n = self.raw["num_hidden_layers"]
        return dict(
            hidden_size=self.raw["hidden_size"],
            intermediate_size=self.raw["intermediate_size"],
            num_hidden_layers=n,
            num_attention_heads=self.raw["num_attention_heads"],
            num_key_value_heads=self.raw["num_key_value_heads"],
            in_channels=self.get("in_channels", 192),
            audio_acoustic_hidden_dim=self.get("audio_acoustic_hidden_dim", 64),
            patch_size=self.get("patch_size", 2),
            encoder_hidden_size=self.encoder_width,
            is_turbo=self.is_turbo,
            model_version=self.get("model_version"),
            **self._shared(n),
        )

    def condition_encoder_kwargs(self) -> dict[str, Any]:
        # The lyric and timbre stacks each index a prefix of one `layer_types` list.
        n = max(self.get("num_lyric_encoder_hidden_layers", 8), self.get("num_timbre_encoder_hidden_layers", 4))
        return dict(
            text_hidden_dim=self.get("text_hidden_dim", 1024),
            timbre_hidden_dim=self.get("timbre_hidden_dim", 64),
            num_lyric_encoder_hidden_layers=self.get("num_lyric_encoder_hidden_layers", 8),
            num_timbre_encoder_hidden_layers=self.get("num_timbre_encoder_hidden_layers", 4),
            **self._encoder_widths(),
            **self._shared(n),
        )

    def tokenizer_kwargs(self) -> dict[str, Any]:
        n = self.get("num_attention_pooler_hidden_layers", 2)
        return dict(
            audio_acoustic_hidden_dim=self.get("audio_acoustic_hidden_dim", 64),
            pool_window_size=self.get("pool_window_size", 5),
            fsq_dim=self.get("fsq_dim", self.encoder_width),
            fsq_input_levels=list(self.get("fsq_input_levels", [8, 8, 8, 5, 5, 5])),
            fsq_input_num_quantizers=self.get("fsq_input_num_quantizers", 1),
            num_attention_pooler_hidden_layers=n,
            **self._encoder_widths(),
            **self._shared(n),
        )

    def detokenizer_kwargs(self) -> dict[str, Any]:
        n = self.get("num_attention_pooler_hidden_layers", 2)
        return dict(
            audio_acoustic_hidden_dim=self.get("audio_acoustic_hidden_dim", 64),
            pool_window_size=self.get("pool_window_size", 5),
            num_attention_pooler_hidden_layers=n,
            **self._encoder_widths(),
            **self._shared(n),
        )
