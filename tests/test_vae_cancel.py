"""The cancel check also runs between VAE windows, so a cancel or a shutdown's grace period stops
a long encode or decode, not only the sampler (issue 12, item 5)."""

from __future__ import annotations

import pytest
import torch

from cantata.pipeline import CantataPipeline
from cantata.pipeline.decode import decode_latents
from cantata.pipeline.encode import vae_encode
from cantata.pipeline.request import GenerationCancelled, GenerationRequest, SourceAudio

SR = 48000


@pytest.fixture(scope="module")
def xl(tiny_root) -> CantataPipeline:
    return CantataPipeline.from_pretrained(tiny_root, "xl-sft", device="cpu", dtype="fp32", download=False)


class _CountingCalls:
    """Wrap `vae.<name>`: count the calls; after `cancel_after` calls, the cancel flag is up."""

    def __init__(self, vae, name: str, cancel_after: int = 1):
        self.vae, self.name, self.cancel_after, self.calls = vae, name, cancel_after, 0
        original = getattr(vae, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        setattr(vae, name, counted)

    def cancelled(self) -> bool:
        return self.calls >= self.cancel_after

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        delattr(self.vae, self.name)


def tone(seconds: float) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return (0.5 * torch.sin(2 * torch.pi * 220.0 * t)).repeat(2, 1)


def test_a_cancel_during_a_tiled_decode_stops_it_before_the_next_window(xl):
    latents = torch.randn(1, 600, 64)
    with _CountingCalls(xl.vae, "decode") as decode:
        with pytest.raises(GenerationCancelled, match="before VAE decode window 2 of 10"):
            decode_latents(xl.vae, latents, chunk=128, cancelled=decode.cancelled)  # 10 windows of 64 frames
    assert decode.calls == 1


def test_a_cancel_during_a_tiled_encode_stops_it_before_the_next_window(xl):
    with _CountingCalls(xl.vae, "encode") as encode:
        with pytest.raises(GenerationCancelled, match="before VAE encode window 2 of 3"):
            vae_encode(xl.vae, tone(3.0), torch.Generator(), chunk=SR + 2 * 19200, overlap=19200,
                       cancelled=encode.cancelled)
    assert encode.calls == 1


def test_the_pipeline_checks_between_the_decodes_of_a_batch(xl):
    """On CPU each item decodes in one window: a cancel raised while the first item decodes stops
    the batch before the second item's decode."""
    steps = []
    with _CountingCalls(xl.vae, "decode") as decode:
        with pytest.raises(GenerationCancelled, match="before VAE decode window 1 of 1"):
            xl.generate(GenerationRequest(caption="lo-fi", duration=6.0, seeds=[1, 2], steps=2),
                        on_step=lambda done, total: steps.append(done), cancelled=decode.cancelled)
    assert steps == [1, 2] and decode.calls == 1


def test_the_pipeline_checks_before_each_encode_window_of_a_source(xl):
    """A 20 s source encodes in two 15 s windows on CPU. A request cancelled while queued for the
    encoder (a shutdown past its grace period) stops before the first window, not after the
    whole encode at the first sampler step."""
    steps = []
    request = GenerationRequest(caption="jazz", task="cover", source=SourceAudio(waveform=tone(20.0)), seeds=[3],
                                steps=2, duration=None)
    with _CountingCalls(xl.vae, "encode", cancel_after=0) as encode:
        with pytest.raises(GenerationCancelled, match="before VAE encode window 1 of 2"):
            xl.generate(request, on_step=lambda done, total: steps.append(done), cancelled=encode.cancelled)
    assert steps == [] and encode.calls == 0
