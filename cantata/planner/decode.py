"""The KV-cached decoding loop: several items in one batch, each with its CFG pair (lm.md §3.3, §5.1).

All rows (every item's conditional row, then the unconditional rows of the items that use CFG)
are left-padded to one length with the pad id and run as one batch; positions are `0 … L−1`
for every row *including* the pads, as the official loop leaves them (RoPE makes that
equivalent to 0-based positions mathematically, not bit for bit). Each item has its own FSM,
settings and generator, picks its token from `u + s·(c − u)`, and feeds it to both of its rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..pipeline.cancel import CancelCheck, stop_if_cancelled
from .fsm import MetadataFSM
from .sampling import SamplingSettings, draw, guided, repetition_penalty, top_k_filter, top_p_filter

#: `allowed_small` lists a step's allowed ids when there are at most this many (kit convention).
SMALL_ALLOWED = 64


@dataclass
class Item:
    """One sequence to decode: its prompt ids (and unconditional ids for CFG) and its state."""

    prompt: list[int]
    fsm: MetadataFSM
    settings: SamplingSettings
    max_new_tokens: int
    uncond_prompt: list[int] | None = None  # set: CFG with `settings.cfg_scale`
    generator: torch.Generator | None = None  # None: torch's global CPU generator (as officially)


@dataclass
class Trace:
    """What one item did, step by step (the parity kit's per-phase keys)."""

    tokens: list[int] = field(default_factory=list)
    states: list[str] = field(default_factory=list)  # FSM state when each step began
    n_allowed: list[int] = field(default_factory=list)
    allowed_small: list[list[int]] = field(default_factory=list)
    final_hidden: list[torch.Tensor] = field(default_factory=list)  # [rows of the item, hidden] per forward
    logits: list[torch.Tensor] = field(default_factory=list)  # raw [rows, V] per forward, when kept
    guided_logits: list[torch.Tensor] = field(default_factory=list)  # what the FSM received, when kept
    kept: list[torch.Tensor] = field(default_factory=list)  # finite after FSM + filters, when kept


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`[R, L]` ids and attention mask, shorter rows padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


@torch.inference_mode()
def decode(model, items: list[Item], eos_id: int, pad_id: int, keep_logits_steps: int = 0,
           cancelled: CancelCheck | None = None) -> list[Trace]:
    """Decode every item until it writes EOS / pad or reaches its `max_new_tokens`.

    `keep_logits_steps`: keep the raw and guided logits of the first steps (for parity checks).
    `cancelled` is polled before every forward (one per token), so a cancel or a shutdown stops a
    plan of thousands of codes within one step instead of after the whole phase.
    """
    device = model.device
    cond_rows = [it.prompt for it in items]
    guided_items = [i for i, it in enumerate(items) if it.uncond_prompt is not None]
    rows = cond_rows + [items[i].uncond_prompt for i in guided_items]
    uncond_row = {i: len(items) + k for k, i in enumerate(guided_items)}
    ids, mask = left_pad(rows, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    width = ids.shape[1]
    seen = [torch.tensor(it.prompt, dtype=torch.long) for it in items]  # for the repetition penalty
    traces = [Trace() for _ in items]
    done = [it.max_new_tokens <= 0 for it in items]
    cache, step = None, 0
    inputs, positions = ids, torch.arange(width, device=device).expand(len(rows), -1)
    while not all(done):
        stop_if_cancelled(cancelled, f"planner step {step}")
        out = model.model(input_ids=inputs, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
        cache = out.cache
        hidden = out.last_hidden_state[:, -1]
        logits = model.lm_head(hidden).float()
        next_tokens = torch.full((len(rows),), pad_id, dtype=torch.long, device=device)
        for i, it in enumerate(items):
            if done[i]:
                continue
            tr = traces[i]
            mine = [i] + ([uncond_row[i]] if i in uncond_row else [])
            tr.final_hidden.append(hidden[mine].float().cpu())
            scores = (guided(logits[i], logits[uncond_row[i]], it.settings.cfg_scale) if i in uncond_row
                      else logits[i].clone())
            if step < keep_logits_steps:
                tr.logits.append(logits[mine].cpu())
                tr.guided_logits.append(scores.cpu().clone())
            token = _pick(it, scores, seen[i], tr, step < keep_logits_steps)
            it.fsm.advance(token)
            tr.tokens.append(token)
            seen[i] = torch.cat([seen[i], torch.tensor([token])])
            next_tokens[mine] = token
            done[i] = token in (eos_id, pad_id) or len(tr.tokens) >= it.max_new_tokens
        inputs = next_tokens.unsqueeze(1)
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=device)], dim=1)
        positions = torch.full((len(rows), 1), width + step, dtype=torch.long, device=device)
        step += 1
    return traces


def _pick(it: Item, scores: torch.Tensor, seen: torch.Tensor, tr: Trace, keep: bool) -> int:
    s = it.settings
    tr.states.append(it.fsm.state.name)
    scores = it.fsm.constrain(scores)
    allowed = torch.isfinite(scores)
    count = int(allowed.sum())
    tr.n_allowed.append(count)
    tr.allowed_small.append(torch.nonzero(allowed).flatten().tolist() if count <= SMALL_ALLOWED else [])
    if count == 1:  # forced token: every filter keeps it and the draw (if any) must pick it
        return _forced(scores, s.temperature, it.generator, tr, keep)
    scores = repetition_penalty(scores, seen.to(scores.device), s.repetition_penalty)
    scores = top_k_filter(scores, s.top_k)
    if s.temperature > 0 or keep:  # the top token always survives top-p: greedy needs no nucleus
        scores = top_p_filter(scores, s.top_p)
    if keep:
        tr.kept.append(torch.isfinite(scores).cpu())
    return draw(scores, s.temperature, it.generator)


def _forced(scores: torch.Tensor, temperature: float, generator: torch.Generator | None, tr: Trace,
            keep: bool) -> int:
    """A single allowed token. When sampling, the official draw still consumes one full-vocabulary
    exponential draw, so it is made anyway to keep the random stream in step."""
    if keep:
        tr.kept.append(torch.isfinite(scores).cpu())
    return draw(scores, temperature, generator)
