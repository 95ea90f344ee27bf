"""Regional torch.compile with length buckets (issue 9): compiled blocks give the eager forward
within 1e-5 (fp32, CPU), and neither a new step nor a new length inside the same bucket
recompiles. Slow: inductor's first compilation takes about 2 minutes on the shared 2-core box."""

from __future__ import annotations

import pytest
import torch

from cantata.models.padded_dit import dit_forward
from cantata.models.speed import SpeedOptions, apply_speed
from cantata.models.tiny import dit_config, random_dit
from test_speed_attention import inputs, rel_l2


@pytest.mark.slow
def test_compiled_bucketed_blocks_match_eager_without_recompiling():
    model = random_dit(dit_config("xl-sft", "tiny"), seed=1)
    x, t, enc, context = inputs(model, 101)
    other = inputs(model, 121, enc_tokens=30)  # same buckets (375 frames, 64 tokens)
    with torch.no_grad():
        eager = dit_forward(model.transformer, x, t, enc, context)
        eager_other = dit_forward(model.transformer, *other)
        apply_speed(model.transformer, SpeedOptions(attention="sdpa", fused_projections=True, compile=True, bucketing=True))
        compiled = dit_forward(model.transformer, x, t, enc, context)
        with torch._dynamo.config.patch(error_on_recompile=True):
            next_step = dit_forward(model.transformer, x, t * 0.5, enc, context)
            compiled_other = dit_forward(model.transformer, *other)
    assert rel_l2(compiled, eager) <= 1e-5
    assert rel_l2(compiled_other, eager_other) <= 1e-5
    assert next_step.shape == compiled.shape and not torch.equal(next_step, compiled)
