"""A tiny NextStep-1 (8x8 images -> 16 tokens, width 32) with every weight randomised, so that z, the
head's velocity and the tokens all depend on the inputs (the official init zeroes the head's output).
tests/speculative/conftest.py holds the same fixture."""
from __future__ import annotations

import pytest
import torch

SMALL = dict(img_size=8, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=64, head={"width": 32, "depth": 2, "num_sampling_steps": 3},
             sampling={"num_iter": 16, "cfg": 2.0, "cfg_schedule": "constant"})


@pytest.fixture
def make_bundle():
    """``make_bundle(seed=0, dtype=float32, **config overrides)`` -> a randomised tiny bundle in eval mode."""
    from driftar_nextstep1.build import build_nextstep1
    from driftar_nextstep1.config import NextStep1Config

    def make(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
        torch.manual_seed(seed)
        bundle = build_nextstep1(NextStep1Config(**{**SMALL, **overrides}))
        with torch.no_grad():
            for p in bundle.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        return bundle.to(dtype).eval()
    return make
