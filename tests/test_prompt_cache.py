"""Repeated captions skip the text encoder (issue 9): a caption seen at the same padded width is
read from the cache, and the states equal what Qwen3 computes afresh."""

from __future__ import annotations

import pytest
import torch

from cantata.pipeline import CantataPipeline, GenerationRequest
from cantata.pipeline.conditioning import CAPTION_CACHE_ENTRIES


@pytest.fixture(scope="module")
def pipe(tiny_root) -> CantataPipeline:
    return CantataPipeline.from_pretrained(tiny_root, "xl-sft", device="cpu", dtype="fp32", download=False)


def _counting(conditioner) -> list[int]:
    rows: list[int] = []
    conditioner.text_encoder.register_forward_hook(lambda m, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0]),
                                                   with_kwargs=True)
    return rows


def test_a_repeated_caption_is_encoded_once_and_reads_back_exactly(pipe):
    c = pipe.conditioner
    c._captions.clear()
    rows = _counting(c)
    first, mask = c.caption_states(["warm lo-fi hip hop"])
    again, mask_again = c.caption_states(["warm lo-fi hip hop"])
    assert rows == [1] and torch.equal(first, again) and torch.equal(mask, mask_again)

    both, _ = c.caption_states(["warm lo-fi hip hop, longer now", "warm lo-fi hip hop"])  # new width: both new
    assert rows == [1, 2]
    mixed, _ = c.caption_states(["calm piano", "warm lo-fi hip hop, longer now"])
    assert rows == [1, 2, 1]  # only the new caption went through Qwen3
    c._captions.clear()
    fresh, _ = c.caption_states(["calm piano", "warm lo-fi hip hop, longer now"])
    assert torch.allclose(mixed, fresh, rtol=0, atol=1e-5)


def test_the_cache_keeps_the_most_recent_captions_and_songs_are_unchanged(pipe):
    c = pipe.conditioner
    c._captions.clear()
    for i in range(CAPTION_CACHE_ENTRIES + 5):
        c.caption_states([f"caption {i}"])
    kept = [prompt for prompt, _ in c._captions]
    assert kept == [f"caption {i}" for i in range(5, CAPTION_CACHE_ENTRIES + 5)]  # the oldest went first
    request = GenerationRequest(caption="uk garage", lyrics="[Verse]\nla", duration=10, seeds=[3], steps=2)
    fresh = pipe.generate(request)
    rows = _counting(c)
    cached = pipe.generate(request)  # its caption prompt is read from the cache
    assert rows == [] and torch.equal(cached.audio, fresh.audio)
