"""The core's own plugin: tokenizers, datasets, the drift head and the training objectives, registered through the same hooks as third parties.

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


def _baseline_objective(run_config: Any, bundle: Any) -> Any:
    from driftar_core.train.objective import BaselineObjective     # the backbone's own head loss (+ aux loss)
    return BaselineObjective.from_config(run_config, bundle)


def _drift_objective(run_config: Any, bundle: Any) -> Any:
    from driftar_core.method.objective import DriftARObjective     # drift decoder + draft, two-phase (Eq. 9-10)
    return DriftARObjective.from_config(run_config, bundle)


def _draft_objective(run_config: Any, bundle: Any) -> Any:
    from driftar_core.method.window_draft_train import WindowDraftObjective   # the window draft's distillation
    return WindowDraftObjective.from_config(run_config, bundle)


@hookimpl
def driftar_register_objectives(register: Any) -> None:
    register("baseline", _baseline_objective)
    register("drift", _drift_objective)
    register("draft", _draft_objective)


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
