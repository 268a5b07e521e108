"""Fixtures for the MAR plugin tests: a very small MAR on the 16x16 digits token grid (L = 64, c = 4)."""
from __future__ import annotations

import pytest
import torch
from driftar_mar.build import build_mar
from driftar_mar.config import MARConfig
from mar_small import SMALL  # tests/mar/mar_small.py


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def config() -> MARConfig:
    return MARConfig(**SMALL)


@pytest.fixture
def bundle(config):
    return build_mar(config).eval()


@pytest.fixture
def tokens(bundle):
    """Real digit tokens [8, 64, 4] and their labels [8]."""
    from driftar_core.data.digits import DigitsDataset
    ds = DigitsDataset("train")
    return bundle.tokenizer.encode(ds.images[:8]), ds.labels[:8]
