"""Pretrained models: the model card schema and loading weights from local disk (offline).

A zoo entry is a directory (the ``driftar-zoo`` distribution ships them under
``driftar_zoo/models/<arch.tag>/``; any plugin may register its own):

    card.json          a :class:`ModelCard`: name, weights file + sha256, parameter count, metrics,
                       the exact command that made it, dataset, license
    config.json        the model config (``driftar_core.bundle`` format; the evaluator has its own)
    model.safetensors  the weights (safetensors only)
    README.md          the human-readable card

``create_model("mar_tiny.digits")`` finds the card in the registry (``driftar_register_models``) and
calls :func:`load_pretrained`, which checks the sha256 BEFORE reading the weights. Cards are plain
pydantic data: importing this module does not import torch (plugins build cards at registration time).
"""
from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from driftar_core.files import sha256_file


CARD_FILE = "card.json"
DEFAULT_EVALUATOR = "digits_evaluator.digits"


class ModelCard(BaseModel):
    """What a pretrained weights file is, where it is, and how it was made (timm's ``pretrained_cfg``).

    ``weights`` is relative to the card's directory, which :func:`load_card` remembers (``directory``).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["generator", "evaluator"] = "generator"   # evaluator: the metrics' classifier, no backbone
    name: str                                               # "arch.tag", e.g. "mar_tiny.digits"
    arch: str                                               # registry architecture, e.g. "mar_tiny"
    tag: str                                                # weights tag: data (and recipe), e.g. "digits"
    backbone: str | None = None                             # backbone plugin; required for generators
    weights: str                                            # safetensors file, relative to the card's dir
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")          # of the weights file
    num_params: int = Field(ge=1)                           # parameters of the loaded model
    metrics: dict[str, Any]                                 # measured, e.g. fd / fd_floor / test_accuracy
    command: str                                            # the exact command that produced the weights
    dataset: str
    license: str
    created: datetime.date
    notes: str = ""

    _directory: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self) -> "ModelCard":
        if not self.tag or self.name != f"{self.arch}.{self.tag}":
            raise ValueError(f"name must be 'arch.tag' = {self.arch + '.' + self.tag!r}, got {self.name!r}")
        if self.kind == "generator" and not self.backbone:
            raise ValueError(f"generator card {self.name!r} needs a backbone (the plugin that builds it)")
        w = PurePosixPath(self.weights)
        if w.is_absolute() or ".." in w.parts or w.suffix != ".safetensors":
            raise ValueError(f"weights must be a .safetensors path inside the card's directory, got {self.weights!r}")
        return self

    @property
    def directory(self) -> Path:
        if self._directory is None:
            raise ValueError(f"card {self.name!r} was not loaded from disk; use load_card(path)")
        return self._directory

    @property
    def weights_path(self) -> Path:
        return self.directory / self.weights

    @property
    def card_path(self) -> Path:
        return self.directory / CARD_FILE


# -------------------------------------------------------------------------------------------------
# Cards on disk
# -------------------------------------------------------------------------------------------------


def load_card(path: str | Path) -> ModelCard:
    """Read ``card.json`` (or a directory holding one); the card remembers its directory."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"model card not found: {path}")
    from driftar_core.config import ConfigError, validate
    try:
        card = validate(ModelCard, json.loads(path.read_text()), where="card")
    except (ConfigError, json.JSONDecodeError) as e:
        raise ValueError(f"invalid model card {path}: {e}") from None
    card._directory = path.parent.resolve()
    return card


def save_card(card: ModelCard, path: str | Path) -> Path:
    """Write ``card`` as JSON to ``path`` (a file, or a directory -> ``card.json``), atomically."""
    from driftar_core.files import atomic_write_text
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILE
    atomic_write_text(path, json.dumps(card.model_dump(mode="json"), indent=2) + "\n")
    card._directory = path.parent.resolve()
    return path


def make_card(directory: str | Path, name: str, *, num_params: int, metrics: dict[str, Any], command: str,
              dataset: str, kind: Literal["generator", "evaluator"] = "generator", backbone: str | None = None,
              weights: str = "model.safetensors", license: str = "Apache-2.0", notes: str = "") -> ModelCard:
    """Build the card of weights already saved in ``directory`` (sha256 computed here) and write it."""
    directory = Path(directory)
    arch, _, tag = name.partition(".")
    card = ModelCard(kind=kind, name=name, arch=arch, tag=tag, backbone=backbone, weights=weights,
                     sha256=sha256_file(directory / weights), num_params=num_params, metrics=metrics,
                     command=command, dataset=dataset, license=license, notes=notes,
                     created=datetime.date.today())
    save_card(card, directory)
    return card


def verify_weights(card: ModelCard, read: bool = True) -> bytes:
    """The weights file's bytes, after checking them against the card's sha256 (CheckpointError if not);
    ``read=False`` checks the file and returns nothing (``b""``)."""
    from driftar_core.errors import CheckpointError
    path = card.weights_path
    if not path.is_file():
        raise CheckpointError(f"weights of {card.name!r} not found: {path} (named by {card.card_path}). "
                              f"Reinstall the distribution that ships it, or re-create it with: {card.command}")
    data = path.read_bytes() if read else b""
    actual = hashlib.sha256(data).hexdigest() if read else sha256_file(path)
    if actual != card.sha256:
        raise CheckpointError(
            f"weights file {path} is corrupt: sha256 mismatch (file {actual[:16]}..., model card "
            f"{card.card_path} expects {card.sha256[:16]}...). Restore it: reinstall the package that ships "
            f"it (pip install --force-reinstall driftar-zoo, or `git checkout -- {path.name}` in a source "
            f"checkout), or re-create it with: {card.command}")
    return data


def resolve_card(name_or_path: "str | Path | ModelCard") -> ModelCard:
    """A card from itself, a ``card.json`` path / zoo directory, or a registered ``arch.tag`` name."""
    if isinstance(name_or_path, ModelCard):
        return name_or_path
    path = Path(name_or_path)
    if path.suffix == ".json" or path.is_dir():
        return load_card(path)
    from driftar_core.plugins import registries
    return registries().cards.get(str(name_or_path))
