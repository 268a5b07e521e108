"""The core's own plugin: tokenizers and datasets, registered through the same hooks as third parties.

Registered through the ``driftar`` entry point ``core`` of the ``driftar`` distribution. Factories
import torch only when called.
"""
from __future__ import annotations

from typing import Any

from driftar_core.hookspecs import hookimpl


def _patch_tokenizer(**kwargs: Any) -> Any:
    from driftar_core.tokenizers.patch import PatchTokenizer
    return PatchTokenizer(**kwargs)


def _digits(split: str = "train", image_size: int = 16, root: str | None = None) -> Any:
    from driftar_core.data.digits import DigitsDataset
    return DigitsDataset(split=split, image_size=image_size)


def _imagefolder(split: str = "train", image_size: int = 16, root: str | None = None) -> Any:
    from driftar_core.data.imagefolder import ImageFolderDataset
    return ImageFolderDataset(root=root, split=split, image_size=image_size)


def _drift_decoder(config: Any, z_dim: int, token_dim: int) -> Any:
    from driftar_core.method.drift_decoder import DriftDecoder
    return DriftDecoder(token_dim, z_dim, config)


@hookimpl
def driftar_register_heads(register: Any) -> None:
    register("drift", _drift_decoder)


@hookimpl
def driftar_register_tokenizers(register: Any) -> None:
    register("patch", _patch_tokenizer)


@hookimpl
def driftar_register_datasets(register: Any) -> None:
    register("digits", _digits)
    register("imagefolder", _imagefolder)
