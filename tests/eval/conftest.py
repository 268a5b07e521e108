"""Fixtures of the evaluation tests: the shipped evaluator card and the real digits splits."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def evaluator_card():
    """The shipped ``digits_evaluator.digits`` card, read from the zoo's files (no plugin manager)."""
    from driftar_zoo.plugin import MODELS_DIR

    from driftar_core.zoo import load_card
    return load_card(MODELS_DIR / "digits_evaluator.digits" / "card.json")


@pytest.fixture(scope="session")
def evaluator(evaluator_card):
    from driftar_core.pretrained import load_evaluator
    return load_evaluator(evaluator_card)


@pytest.fixture(scope="session")
def digits():
    from driftar_core.data.digits import DigitsDataset
    return DigitsDataset("train"), DigitsDataset("test")
