"""The constrained-decoding state machine of the planner (lm.md §4), token for token official.

`FieldTables` holds what depends only on the tokenizer (prefix trees, forced tokens, masks) and
is built once per planner; `MetadataFSM` is the per-generation state: `constrain` masks one
row's next-token logits in place, `advance` feeds it the chosen token.

Field names are forced one token at a time as the *longest prefix that is a single token*
(`bp` `m` `:`, not BPE's `b` `pm` `:`); values follow prefix trees built from the tokenization of
`"<field>: <value>"`; the caption is free text whose end is detected from the model's own
argmax; user values are injected as the tokens of `" <value>\\n"`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto

import torch

from ..models.vocabulary import KEY_SCALES, TIME_SIGNATURES, VOCAL_LANGUAGES
from .tokenizer import AUDIO_CODE_BASE, VALID_CODES, PlannerTokenizer

BPM_RANGE = (30, 300)
MIN_DURATION = 10
CAPTION_MAX_TOKENS = 512
NEG_INF = float("-inf")


class State(Enum):
    THINK_TAG = auto()
    NEWLINE_AFTER_THINK = auto()
    BPM_NAME = auto()
    BPM_VALUE = auto()
    CAPTION_NAME = auto()
    CAPTION_VALUE = auto()
    DURATION_NAME = auto()
    DURATION_VALUE = auto()
    KEYSCALE_NAME = auto()
    KEYSCALE_VALUE = auto()
    LANGUAGE_NAME = auto()
    LANGUAGE_VALUE = auto()
    TIMESIG_NAME = auto()
    TIMESIG_VALUE = auto()
    THINK_END_TAG = auto()
    CODES_GENERATION = auto()
    COMPLETED = auto()


FIXED = {
    State.THINK_TAG: "<think>", State.NEWLINE_AFTER_THINK: "\n", State.BPM_NAME: "bpm:",
    State.CAPTION_NAME: "caption:", State.DURATION_NAME: "duration:", State.KEYSCALE_NAME: "keyscale:",
    State.LANGUAGE_NAME: "language:", State.TIMESIG_NAME: "timesignature:", State.THINK_END_TAG: "</think>",
}
#: Field order of the CoT block (genres, an understanding-only field, is not generated here).
FIELDS = ("bpm", "caption", "duration", "keyscale", "language", "timesignature")
NAME_STATE = {"bpm": State.BPM_NAME, "caption": State.CAPTION_NAME, "duration": State.DURATION_NAME,
              "keyscale": State.KEYSCALE_NAME, "language": State.LANGUAGE_NAME, "timesignature": State.TIMESIG_NAME}
VALUE_STATE = {"bpm": State.BPM_VALUE, "caption": State.CAPTION_VALUE, "duration": State.DURATION_VALUE,
               "keyscale": State.KEYSCALE_VALUE, "language": State.LANGUAGE_VALUE,
               "timesignature": State.TIMESIG_VALUE}
FIELD_OF_VALUE = {v: k for k, v in VALUE_STATE.items()}
#: Field names recognised after a caption ends on its own; anything else means "next field".
CAPTION_ENDING_TARGETS = ("duration", "keyscale", "language", "timesignature")

Tree = dict[tuple[int, ...], set[int]]


class FieldTables:
    """Everything the FSM needs from the tokenizer, computed once per planner."""

    def __init__(self, tok: PlannerTokenizer, max_duration: int):
        self.tok = tok
        self.vocab = len(tok)
        self.max_duration = max_duration
        self.eos = tok.eos_id
        self.newline = tok.encode("\n")[-1]
        self.backtick = tok.encode("`")[-1]
        self.trees: dict[str, Tree] = {
            "bpm": self._tree("bpm", [str(v) for v in range(BPM_RANGE[0], BPM_RANGE[1] + 1)]),
            "duration": self._tree("duration", [str(v) for v in range(MIN_DURATION, max_duration + 1)]),
            "timesignature": self._tree("timesignature", [str(v) for v in TIME_SIGNATURES]),
            "keyscale": self._tree("keyscale", list(KEY_SCALES), first_char="ABCDEFG"),
            "language": self._tree("language", list(VOCAL_LANGUAGES)),
        }
        # Official: `list()` of the set of first tokens, built in the language list's order; the
        # order decides ties of the language argmax, so it is rebuilt the same way.
        firsts: set[int] = set()
        for lang in VOCAL_LANGUAGES:
            firsts.add(self._value_tokens("language", lang)[0])
        self.language_firsts = list(firsts)
        codes = torch.arange(AUDIO_CODE_BASE, AUDIO_CODE_BASE + VALID_CODES)
        self.code_mask = torch.zeros(self.vocab)  # -inf on the valid codes (caption)
        self.code_mask[codes] = NEG_INF
        self.codes_only_mask = torch.full((self.vocab,), NEG_INF)  # 0 on the valid codes + EOS
        self.codes_only_mask[codes] = 0.0
        self.codes_only_mask[self.eos] = 0.0
        self._forced: dict[str, int] = {}

    def _value_tokens(self, name: str, value: str) -> list[int] | None:
        context = self.tok.encode(f"{name}:")
        full = self.tok.encode(f"{name}: {value}")
        return full[len(context):] if full[:len(context)] == context else None

    def _tree(self, name: str, values: list[str], first_char: str | None = None) -> Tree:
        tree: Tree = {}
        for value in values:
            ids = self._value_tokens(name, value)
            if not ids:
                continue
            if first_char is not None:
                text = self.tok.token_text(ids[0]).lstrip()
                if not text or text[0].upper() not in first_char:
                    continue
            for i in range(len(ids) + 1):
                tree.setdefault(tuple(ids[:i]), set()).add(ids[i] if i < len(ids) else self.newline)
        return tree

    def forced_token(self, remaining: str) -> int:
        """The token of the longest prefix of `remaining` that encodes to exactly one token."""
        if remaining not in self._forced:
            for end in range(len(remaining), 0, -1):
                ids = self.tok.encode(remaining[:end])
                if len(ids) == 1:
                    self._forced[remaining] = ids[0]
                    break
            else:
                raise ValueError(f"no single token starts {remaining!r}")
        return self._forced[remaining]

    def user_value_tokens(self, value) -> list[int]:
        return self.tok.encode(f" {value}\n")


def whitelist(scores: torch.Tensor, allowed) -> None:
    """Keep the logits of `allowed` as they are, -inf everywhere else (in place)."""
    index = torch.tensor(sorted(set(allowed)), dtype=torch.long, device=scores.device)
    kept = scores[index].clone()
    scores.fill_(NEG_INF)
    scores[index] = kept


@dataclass
class MetadataFSM:
    """One generation's state. `phase` "cot" writes the metadata block; "codes" writes audio codes."""

    tables: FieldTables
    phase: str = "cot"
    user: dict[str, object] = field(default_factory=dict)  # injected values (bpm, duration, keyscale, …)
    skip_caption: bool = False
    skip_language: bool = False
    stop_at_reasoning: bool = True  # CoT phase: EOS where `</think>` would come
    target_codes: int | None = None  # codes phase: EOS blocked until this many codes, then forced
    prompt_closed: bool = False  # codes phase: the prompt holds `</think>` (metadata already written)

    state: State = State.THINK_TAG
    position: int = 0  # characters of the current fixed string already written
    value_ids: list[int] = field(default_factory=list)
    queue: list[int] = field(default_factory=list)  # user value tokens still to inject
    queue_field: str | None = None
    caption_text: str = ""
    caption_tokens: int = 0
    after_newline: bool = False
    caption_ending: bool = False
    pending_name: str = ""
    codes_count: int = 0

    @classmethod
    def for_codes(cls, tables: FieldTables, prompt_ids: list[int], target_duration: float | None) -> "MetadataFSM":
        """Codes phase: a prompt that already holds `</think>` switches to CODES_GENERATION at the
        first step (officially inside the first call, so the step-0 state reads THINK_TAG)."""
        return cls(tables, phase="codes", skip_caption=True, skip_language=True, stop_at_reasoning=False,
                   target_codes=int(target_duration * 5) if target_duration and target_duration > 0 else None,
                   prompt_closed=tables.tok.think_end_id in prompt_ids)

    # -- transitions ----------------------------------------------------------------------------

    def _next_name(self, after: str) -> State:
        for name in FIELDS[FIELDS.index(after) + 1:]:
            if (name == "caption" and self.skip_caption) or (name == "language" and self.skip_language):
                continue
            return NAME_STATE[name]
        return State.THINK_END_TAG

    def _successor(self) -> State:
        s = self.state
        if s == State.THINK_TAG:
            return State.NEWLINE_AFTER_THINK
        if s == State.NEWLINE_AFTER_THINK:
            return State.BPM_NAME
        if s == State.THINK_END_TAG:
            return State.CODES_GENERATION
        for name in FIELDS:
            if s == NAME_STATE[name]:
                return VALUE_STATE[name]
            if s == VALUE_STATE[name]:
                return self._next_name(name)
        return State.COMPLETED

    def _enter(self, state: State) -> None:
        self.state = state
        self.position = 0
        self.value_ids = []
        self.caption_text = ""
        self.caption_tokens = 0
        self.after_newline = False
        self.caption_ending = False
        self.pending_name = ""

    # -- masking ------------------------------------------------------------------------------

    def constrain(self, scores: torch.Tensor) -> torch.Tensor:
        """Mask one row's logits `[V]` (float32) for the next token; returns the row (maybe new)."""
        t = self.tables
        if self.state == State.COMPLETED:
            return scores
        if self.phase == "codes" and self.state == State.THINK_TAG and self.prompt_closed:
            self.state = State.CODES_GENERATION
        if self.state == State.CODES_GENERATION:
            scores = scores + t.codes_only_mask.to(scores.device)
            if self.target_codes is not None:
                if self.codes_count < self.target_codes:
                    scores[t.eos] = NEG_INF
                else:
                    whitelist(scores, [t.eos])
            return scores
        if self.queue:
            whitelist(scores, [self.queue[0]])
            return scores
        if self.state in FIXED:
            remaining = FIXED[self.state][self.position:]
            if self.state == State.THINK_END_TAG and self.stop_at_reasoning and len(remaining) <= 10:
                whitelist(scores, [t.eos])
            else:
                whitelist(scores, [t.forced_token(remaining)])
            return scores
        name = FIELD_OF_VALUE[self.state]
        if self.user.get(name) is not None and not self.value_ids and not self.caption_text:
            self.queue = t.user_value_tokens(self.user[name])
            self.queue_field = name
            whitelist(scores, [self.queue[0]])
            return scores
        if name == "caption":
            return self._constrain_caption(scores)
        tree = t.trees[name]
        prefix = tuple(self.value_ids)
        if name == "language" and not prefix:
            firsts = t.language_firsts
            best = firsts[int(torch.argmax(scores[torch.tensor(firsts, device=scores.device)]))]
            whitelist(scores, [best])
        elif name in ("keyscale", "language", "timesignature") and t.newline in tree.get(prefix, ()):
            whitelist(scores, [t.newline])
        else:
            allowed = tree.get(prefix, set())
            if not allowed and name in ("keyscale", "language"):
                allowed = {t.newline}
            whitelist(scores, allowed)
        return scores

    def _constrain_caption(self, scores: torch.Tensor) -> torch.Tensor:
        t = self.tables
        if self.after_newline:
            self.after_newline = False
            top = t.tok.token_text(int(torch.argmax(scores)))
            if top and top[0] not in " \t":  # a new, unindented line: the caption is ending
                self.caption_ending = True
                self.pending_name = ""
                return scores
        if self.caption_ending:  # completely unmasked until the next field name is written
            return scores
        scores[t.backtick] = NEG_INF
        scores = scores + t.code_mask.to(scores.device)
        if self.caption_tokens >= CAPTION_MAX_TOKENS:
            whitelist(scores, [t.newline])
        return scores

    # -- advancing ------------------------------------------------------------------------------

    def advance(self, token: int) -> None:
        t = self.tables
        if self.state == State.COMPLETED:
            return
        if self.state == State.CODES_GENERATION:
            self.codes_count += 1
            return
        if self.queue:
            self.queue.pop(0)
            if not self.queue:
                name, self.queue_field = self.queue_field, None
                self.state, self.position, self.value_ids = self._next_name(name), 0, []
            return
        text = t.tok.token_text(token)
        if self.state in FIXED:
            self.position += len(text)
            if self.position >= len(FIXED[self.state]):
                if self.state == State.THINK_END_TAG and self.stop_at_reasoning:
                    self._enter(State.COMPLETED)
                else:
                    self._enter(self._successor())
        elif self.state == State.CAPTION_VALUE:
            self._advance_caption(text)
        elif token == t.newline:
            self._enter(self._successor())
        else:
            self.value_ids.append(token)

    def _advance_caption(self, text: str) -> None:
        self.caption_tokens += 1
        self.caption_text += text
        self.after_newline = "\n" in text
        if not self.caption_ending:
            return
        self.pending_name += text
        if ":" not in text:
            return
        name = self.pending_name.strip().rstrip(":").strip().lower()
        if name in CAPTION_ENDING_TARGETS:
            self._enter(VALUE_STATE[name])
        else:
            self._enter(self._successor())
