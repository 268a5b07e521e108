"""Registers every zoo entry ``models/<arch.tag>/card.json`` through ``driftar_register_models``.

Cheap to import (no torch): registering reads the small JSON cards; weights are read, and their
sha256 checked, only when a model is loaded (``create_model(name, pretrained=True)``).
To add an entry, write its directory with :func:`driftar_core.zoo.make_card` (see README.md).
"""
from __future__ import annotations

from pathlib import Path

from driftar_core.hookspecs import hookimpl

MODELS_DIR = Path(__file__).parent / "models"


def card_paths() -> list[Path]:
    """The card files this distribution ships, sorted by name."""
    return sorted(MODELS_DIR.glob("*/card.json"))


@hookimpl
def driftar_register_models(register):
    from driftar_core.zoo import load_card

    for path in card_paths():
        card = load_card(path)
        if card.name != path.parent.name:
            raise ValueError(f"{path}: card name {card.name!r} differs from its directory name {path.parent.name!r}")
        register(card)
