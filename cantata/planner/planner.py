"""`Planner`: requests in, planned metadata and audio codes out (lm.md §2.1), several at once.

Two phases, each one decoding batch for all requests:

1. **metadata (CoT)** — skipped when the user gave bpm, key, time signature and duration (or
   `use_cot_metas` is off); no CFG; the user's values are injected; stops with EOS where
   `</think>` would come.
2. **codes** (`thinking`) — the metadata as a YAML block in the prompt, CFG against the official
   unconditional prompt, exactly `int(5·D)` codes for a duration D.

Randomness follows the official PyTorch backend on CPU: with `seeds`, a CPU generator seeded
with `seeds[0]` draws the metadata and (batch 1) the codes, and batch item i > 1 reseeds with
`seeds[i]` before its codes; without seeds the global torch generator is used, as upstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..pipeline.cancel import CancelCheck
from . import prompts
from .checkpoint import DEFAULT_PLANNER, PlannerSpec, load_planner
from .decode import Item, Trace, decode
from .fsm import FieldTables, MetadataFSM
from .parse import audio_codes, parse_metadata
from .sampling import SamplingSettings
from .tokenizer import PlannerTokenizer

#: The FSM's longest duration for GPU tiers of at least 24 GB (and the parity kit); smaller tiers
#: use 480, CPU-only official installs 240 (lm.md §4.1).
DEFAULT_MAX_DURATION = 600
#: Token budget of the metadata phase (the caption alone is capped at 512 tokens by the FSM).
COT_MAX_NEW_TOKENS = 3500


@dataclass
class PlanRequest:
    """What the planner is asked. Metadata left None is completed by the planner."""

    caption: str
    lyrics: str = ""
    bpm: int | None = None
    keyscale: str | None = None
    timesignature: int | str | None = None
    duration: float | None = None  # seconds; also the codes' length
    thinking: bool = True  # write audio codes (else metadata only)
    use_cot_metas: bool = True
    use_cot_caption: bool = True
    use_cot_language: bool = True
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    negative_prompt: str | None = None  # the codes phase's unconditional user message
    seeds: list[int] | None = None  # one per batch item; None: unseeded, as upstream
    batch_size: int = 1  # used when seeds is None

    @property
    def items(self) -> int:
        return len(self.seeds) if self.seeds else self.batch_size

    def user_metadata(self) -> dict[str, Any]:
        """The values injected into the metadata phase (the vocal language is not one, officially)."""
        given = {"bpm": self.bpm, "keyscale": self.keyscale or None,
                 "timesignature": str(self.timesignature) if self.timesignature not in (None, "", "N/A") else None,
                 "duration": int(self.duration) if self.duration and self.duration > 0 else None}
        return {k: v for k, v in given.items() if v is not None}


@dataclass
class Plan:
    metadata: dict[str, Any]  # parsed metadata block (or the user's values when it was skipped)
    codes: list[list[int]]  # one list per batch item; empty lists without `thinking`
    cot_text: str | None  # the metadata phase's raw output; None when skipped
    traces: dict[str, Trace] = field(default_factory=dict)  # "cot", "codes0", "codes1", …


class Planner:
    def __init__(self, model, tokenizer: PlannerTokenizer, spec: PlannerSpec | None = None,
                 max_duration: int = DEFAULT_MAX_DURATION):
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.tables = FieldTables(tokenizer, max_duration)

    @classmethod
    def from_pretrained(cls, root: str | Path, name: str = DEFAULT_PLANNER, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, download: bool = True,
                        max_duration: int = DEFAULT_MAX_DURATION) -> "Planner":
        model, tokenizer, spec = load_planner(root, name, device=device, dtype=dtype, download=download)
        return cls(model, tokenizer, spec, max_duration)

    @property
    def name(self) -> str | None:
        return self.spec.name if self.spec else None

    def plan(self, requests: list[PlanRequest], keep_logits_steps: int = 0,
             cancelled: CancelCheck | None = None) -> list[Plan]:
        """Plan every request; the metadata phases run as one batch, then the codes phases.
        `cancelled` is polled between decode steps (`GenerationCancelled` when it says so)."""
        device = self.model.device
        generators = [_generator(r.seeds[0], device) if r.seeds else None for r in requests]
        metas = [self._skip_cot(r) for r in requests]
        cot_jobs = [i for i, m in enumerate(metas) if m is None]
        cot_traces = self._run(
            [self._cot_item(requests[i], generators[i]) for i in cot_jobs], keep_logits_steps, cancelled)
        plans: list[Plan] = []
        for i, r in enumerate(requests):
            if i in cot_jobs:
                trace = cot_traces[cot_jobs.index(i)]
                text = self.tokenizer.decode(trace.tokens)
                plans.append(Plan(parse_metadata(text), [[] for _ in range(r.items)], text, {"cot": trace}))
            else:
                plans.append(Plan(metas[i], [[] for _ in range(r.items)], None))
        code_jobs = [(i, k) for i, r in enumerate(requests) if r.thinking for k in range(r.items)]
        code_items = []
        for i, k in code_jobs:
            r = requests[i]
            gen = generators[i] if r.items == 1 else _generator(r.seeds[k], device) if r.seeds else None
            code_items.append(self._codes_item(r, plans[i].metadata, gen))
        for (i, k), trace in zip(code_jobs, self._run(code_items, keep_logits_steps, cancelled)):
            plans[i].codes[k] = audio_codes(self.tokenizer.decode(trace.tokens))
            plans[i].traces[f"codes{k}" if requests[i].items > 1 else "codes"] = trace
        return plans

    def _run(self, items: list[Item], keep_logits_steps: int, cancelled: CancelCheck | None) -> list[Trace]:
        if not items:
            return []
        return decode(self.model, items, self.tokenizer.eos_id, self.tokenizer.pad_id, keep_logits_steps, cancelled)

    @staticmethod
    def _skip_cot(r: PlanRequest) -> dict[str, Any] | None:
        """The metadata without a metadata phase (all four given, or `use_cot_metas` off), else None."""
        user = r.user_metadata()
        if r.use_cot_metas and not all(k in user for k in ("bpm", "keyscale", "timesignature", "duration")):
            return None
        return user

    def _cot_item(self, r: PlanRequest, generator: torch.Generator | None) -> Item:
        fsm = MetadataFSM(self.tables, phase="cot", user=r.user_metadata(), skip_caption=not r.use_cot_caption,
                          skip_language=not r.use_cot_language, stop_at_reasoning=True)
        return Item(self.tokenizer.encode(prompts.cot_prompt(r.caption, r.lyrics)), fsm, r.sampling,
                    COT_MAX_NEW_TOKENS, generator=generator)

    def _codes_item(self, r: PlanRequest, metadata: dict[str, Any], generator: torch.Generator | None) -> Item:
        target = r.duration if r.duration and r.duration > 0 else _planned_seconds(metadata)
        prompt = self.tokenizer.encode(prompts.codes_prompt(r.caption, r.lyrics, prompts.cot_block(metadata)))
        uncond = None
        if r.sampling.cfg_scale > 1.0:
            uncond = self.tokenizer.encode(prompts.codes_unconditional_prompt(r.negative_prompt))
        bounded = min(max(target, 10), self.tables.max_duration) if target else self.tables.max_duration
        return Item(prompt, MetadataFSM.for_codes(self.tables, prompt, target), r.sampling,
                    int(bounded * 5) + 10, uncond, generator)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    """On CPU this reproduces `torch.manual_seed(seed)` followed by draws from the global generator."""
    return torch.Generator(device=device).manual_seed(seed)


def _planned_seconds(metadata: dict[str, Any]) -> float | None:
    value = metadata.get("duration")
    return float(value) if isinstance(value, int) and value > 0 else None
