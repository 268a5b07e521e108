"""Pretrained weights: a zoo card -> a loaded model (a generator bundle or the evaluator), offline.

``create_model("mar_tiny.digits")`` finds the card in the registry and calls :func:`load_pretrained`,
which checks the weights' sha256 against the card BEFORE reading them (``driftar_core.zoo`` holds the
card schema and the check; this module builds the models, so it sits above the bundle and registry).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from driftar_core.errors import CheckpointError
from driftar_core.files import read_json_object
from driftar_core.zoo import DEFAULT_EVALUATOR, ModelCard, resolve_card, verify_weights

if TYPE_CHECKING:  # pragma: no cover
    from driftar_core.bundle import ModelBundle
    from driftar_core.eval.evaluator import DigitsClassifier


def _load_state(data: bytes, card: ModelCard) -> dict[str, Any]:
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as e:  # the sha matched, so the card itself pins a bad file
        raise CheckpointError(f"cannot read {card.weights_path} as safetensors: {e}") from e


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent} is not a model directory: {path.name} is missing")
    return read_json_object(path, CheckpointError, "restore it (reinstall the distribution that ships it)")


def load_pretrained(card: ModelCard, **overrides: Any) -> "ModelBundle | DigitsClassifier":
    """Load a card's weights, offline: sha256 check, then config.json + weights strictly.

    Generator cards give a :class:`driftar_core.bundle.ModelBundle` (``overrides`` update its config,
    e.g. sampling defaults); evaluator cards give the classifier (see :func:`load_evaluator`).
    """
    if card.kind == "evaluator":
        return load_evaluator(card, **overrides)
    from driftar_core.bundle import build_from_config, read_config
    from driftar_core.weights import check_finite, load_state_strict

    data = verify_weights(card)
    bundle = build_from_config(read_config(card.weights_path.parent), **overrides)
    sd = _load_state(data, card)
    check_finite(sd, f"the weights of {card.name}")
    load_state_strict(bundle, sd, str(card.weights_path))
    return bundle.eval()


def load_evaluator(name: "str | Path | ModelCard" = DEFAULT_EVALUATOR, device: Any = None) -> "DigitsClassifier":
    """The evaluation classifier (eval mode, sha256-checked): by zoo name, card path or card."""
    from driftar_core.weights import load_state_strict
    from driftar_core.config import validate
    from driftar_core.eval.evaluator import DigitsClassifier, EvaluatorConfig

    card = resolve_card(name)
    if card.kind != "evaluator":
        raise ValueError(f"{card.name!r} is a {card.kind}, not an evaluator; load it with create_model()")
    data = verify_weights(card)
    cfg = _read_json(card.weights_path.parent / "config.json")
    if cfg.get("kind") != "evaluator":
        raise CheckpointError(f"{card.weights_path.parent / 'config.json'} is not an evaluator config")
    model = DigitsClassifier(validate(EvaluatorConfig, cfg["config"], where="evaluator"))
    load_state_strict(model, _load_state(data, card), str(card.weights_path))
    return model.to(device).eval() if device is not None else model.eval()
