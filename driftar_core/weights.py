"""Weights on disk and in memory: safetensors files (no pickle), strict loading, the finiteness check.

Imported by the model bundle, checkpoints and pretrained loading alike; of driftar it imports only the
errors and the file helpers, so it sits below all of them.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from driftar_core.errors import CheckpointError, NonFiniteError
from driftar_core.files import atomic_write_bytes


def save_safetensors(state_dict: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in state_dict.items()}
    atomic_write_bytes(Path(path), save(tensors, metadata=metadata))


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated/corrupt files
        raise CheckpointError(f"cannot read {path}: {e} (the file is corrupt or not safetensors; "
                              "re-download or re-save it)") from e


def load_state_strict(module: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    own = module.state_dict()
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{what} does not match the model: {len(bad)} tensors have other shapes "
                              f"({'; '.join(bad[:3])}). Was it saved with another config?")
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{what} does not match the model: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}. Was it saved from another architecture?")


def check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """Raise :class:`NonFiniteError` naming the first tensors of ``tensors`` that hold NaN or inf."""
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteError(f"{what} hold NaN or inf values in {len(bad)} tensors ({', '.join(bad[:3])}); "
                             "the model is broken (diverged training or a damaged file): use an earlier checkpoint")
