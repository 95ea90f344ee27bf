"""The validated generation task: the contract between the API layer and the job layer.

The API layer builds it from a Runware `audioInference` object (`cantata.api.validation`); the
job layer stores it (`to_json`/`from_json`, so a restart loses nothing) and turns it into a
pipeline request. Plain values only: no HTTP, no tensors.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ..models.variants import Variant, get_variant


@dataclass(frozen=True)
class AudioSettings:
    sample_rate: int
    bitrate: int  # kbps
    channels: int


@dataclass(frozen=True)
class Inputs:
    audio: str | None = None  # URL, data URI, base64 or media UUID; resolved elsewhere
    reference_audios: tuple[str, ...] = ()  # Cantata extension: timbre references


@dataclass(frozen=True)
class Settings:
    lyrics: str | None = None  # None: instrumental / improvised
    bpm: int | None = None  # None: the model decides
    key_scale: str | None = None  # canonical "<Note><acc> <mode>"; None: the model decides
    time_signature: int | None = None  # None: the model decides
    vocal_language: str = "en"
    guidance_type: str = field(kw_only=True)  # filled by the validator from `sampling_params` ("none" on turbo)
    cfg_interval_start: float = 0.0
    cfg_interval_end: float = 1.0
    cover_conditioning_scale: float = 1.0
    repainting_start: float | None = None  # 0.0 when a region is given without a start
    repainting_end: float | None = None  # None: the end of the source
    repaint_mode: str = "balanced"
    repaint_strength: float = 0.5
    task: str | None = None  # lego | extract | complete
    track_name: str | None = None
    track_classes: tuple[str, ...] = ()
    dcw: bool = False
    # Cantata extensions for the 5 Hz LM planner; None: the planner's own default.
    thinking: bool = False
    planner: str | None = None  # the served planner's name, when the request named one
    planner_temperature: float | None = None
    planner_cfg_scale: float | None = None
    planner_top_k: int | None = None
    planner_top_p: float | None = None
    rewrite_caption: bool = False


@dataclass(frozen=True)
class LoraChoice:
    """One adapter of the request's `lora` list, resolved at acceptance against the registry."""

    name: str  # the installed adapter's name
    path: str  # where the registry keeps it (the worker loads it from there)
    weight: float


@dataclass(frozen=True)
class AudioInferenceTask:
    task_uuid: str
    variant: Variant
    task_kind: str  # text2music | cover | repaint | lego | extract | complete
    positive_prompt: str
    negative_prompt: str | None
    duration: float | None  # seconds; None when the source track sets the length
    seed: int | None  # None: the server picks one and reports it
    steps: int
    cfg_scale: float | None  # None on turbo models
    strength: float | None
    number_results: int
    output_type: str
    output_format: str
    audio_settings: AudioSettings | None  # None for WAV and FLAC
    delivery_method: str
    webhook_url: str | None
    upload_endpoint: str | None
    include_cost: bool
    ttl: int | None
    inputs: Inputs
    settings: Settings
    loras: tuple[LoraChoice, ...] = ()  # Cantata extension (`lora`): summed with their weights

    def to_json(self) -> str:
        data = asdict(self)
        data["variant"] = self.variant.name
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "AudioInferenceTask":
        data = json.loads(text)
        data["variant"] = get_variant(data["variant"])
        data["audio_settings"] = AudioSettings(**data["audio_settings"]) if data["audio_settings"] else None
        data["inputs"] = Inputs(**{**data["inputs"], "reference_audios": tuple(data["inputs"]["reference_audios"])})
        data["settings"] = Settings(**{**data["settings"], "track_classes": tuple(data["settings"]["track_classes"])})
        data["loras"] = tuple(LoraChoice(**choice) for choice in data.get("loras", ()))
        return cls(**data)
