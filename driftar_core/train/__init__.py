"""Training: ``train(run_config, bundle=None, resume=None, progress=None) -> run directory``.

Files, in the order a step flows through them: ``engine`` (torchrun/DDP), ``data`` (step-indexed,
resumable data order), ``objective`` (recipe -> loss module), ``optim`` (AdamW, warmup, clip),
``ema``, ``checkpoint`` (pickle-free training state), ``rundir`` (what a run writes), ``trainer``.
Imported lazily so ``import driftar_core.train`` does not import torch.
"""
from __future__ import annotations

from typing import Any

__all__ = ["train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from driftar_core.train.trainer import train
        return train
    raise AttributeError(f"module 'driftar_core.train' has no attribute {name!r}")
