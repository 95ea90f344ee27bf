"""The planning stage: the 5 Hz LM planner runs before the DiT batch (lm.md §2, §6).

A text-to-music request goes through the planner when the pipeline has one and either a field
of its metadata (bpm, key, time signature, duration) is missing or it asks for `thinking`. The
planner's metadata fills only what is missing (`merge_metadata`: the user's values always win);
with `thinking` its audio codes become the request's 25 Hz `semantic_hints`. The caption the DiT
sees stays the user's unless `rewrite_caption` is on, and then only does the planner write one
(`use_cot_caption`): a caption nobody reads is the longest part of the metadata phase.

All requests of a DiT batch are planned in one planner batch. Other tasks (cover, repaint, ...)
take their length and structure from their source audio and are not planned.
"""

from __future__ import annotations

import dataclasses

from ..errors import CantataError
from ..models.variants import TEXT2MUSIC
from .cancel import CancelCheck
from .latents import random_seed
from .request import GenerationRequest, PlannedMetadata
from .tasks import codes_hints


class PlannerUnavailable(CantataError, ValueError):
    """`thinking` was asked of a pipeline that has no planner."""

    def __init__(self) -> None:
        super().__init__("unsupportedThinking", "this server has no planner (5 Hz LM): `thinking` needs one; "
                         "start it with a planner or leave `thinking` off", parameter="settings.thinking")


def missing_metadata(request: GenerationRequest) -> bool:
    return None in (request.bpm, request.keyscale, request.timesignature, request.duration)


def needs_planning(request: GenerationRequest) -> bool:
    """Whether a planner, when there is one, runs for `request`."""
    if request.task != TEXT2MUSIC or request.semantic_hints is not None:
        return False
    return request.thinking or missing_metadata(request)


def plan_requests(planner, dit, requests: list[GenerationRequest], cancelled: CancelCheck | None = None
                  ) -> tuple[list[GenerationRequest], list[PlannedMetadata | None]]:
    """The requests as the DiT will render them, and what the planner decided for each (None:
    not planned). Without a planner, requests pass unchanged unless one asks for `thinking`.
    `cancelled` is polled between the planner's decode steps. Planning reports no progress: the
    progress a client sees counts the DiT's steps, and a planner fraction before them would make
    it run twice from 0 to 100."""
    jobs = [i for i, r in enumerate(requests) if needs_planning(r)]
    planned: list[PlannedMetadata | None] = [None] * len(requests)
    if not jobs:
        return requests, planned
    if planner is None:
        if any(requests[i].thinking for i in jobs):
            raise PlannerUnavailable()
        return requests, planned
    from ..planner import merge_metadata  # the planner package imports this one's context builders

    requests = [_with_seeds(r) if i in jobs else r for i, r in enumerate(requests)]
    asks = [plan_request(requests[i]) for i in jobs]
    out = list(requests)
    for i, ask, plan in zip(jobs, asks, planner.plan(asks, cancelled=cancelled)):
        r = requests[i]
        merged = merge_metadata(ask, plan.metadata, r.language, rewrite_caption=r.rewrite_caption)
        hints = None
        if r.thinking:
            length = min(len(c) for c in plan.codes)  # every item has int(5·duration) codes
            hints = codes_hints(dit.audio_tokenizer, dit.detokenizer, [c[:length] for c in plan.codes], dit.dtype)
        out[i] = dataclasses.replace(r, caption=merged.caption, bpm=merged.bpm, keyscale=merged.keyscale,
                                     timesignature=merged.timesignature, duration=merged.duration,
                                     semantic_hints=hints)
        planned[i] = PlannedMetadata(
            bpm=merged.bpm, keyscale=merged.keyscale, timesignature=merged.timesignature,
            duration=merged.duration, language=merged.language,
            caption=merged.caption if r.rewrite_caption else None,
            codes=hints.shape[1] // 5 if hints is not None else 0)
    return out, planned


def plan_request(request: GenerationRequest):
    """A DiT request as the planner's question (seeds shared, so one seed reproduces both)."""
    from ..planner import PlanRequest, SamplingSettings

    return PlanRequest(
        caption=request.caption, lyrics=request.lyrics, bpm=request.bpm, keyscale=request.keyscale,
        timesignature=request.timesignature, duration=request.duration, thinking=request.thinking,
        use_cot_caption=request.rewrite_caption, sampling=request.planner_sampling or SamplingSettings(),
        seeds=list(request.seeds))


def _with_seeds(request: GenerationRequest) -> GenerationRequest:
    """Fix random seeds before planning, so the planner and the DiT draw from the same ones."""
    if request.seeds:
        return request
    return dataclasses.replace(request, seeds=[random_seed() for _ in range(request.batch_size)])
