"""Training objectives: an ``nn.Module`` around the bundle whose forward returns (loss, metrics).

The objective is what the engine wraps in DistributedDataParallel, so the whole loss, tokenizer to
head, runs inside the wrapper's forward and its gradients are all-reduced (the official Drift-AR code
called the unwrapped module; D1 in docs/method.md "Defects of the official code").

    tokens = tokenizer.encode(images)                   # [B, L, c], no grad (the tokenizer is frozen)
    out    = backbone.forward_train(tokens, labels)     # z [B, L, D], loss_mask [B, L], E [B, L]
    loss   = head.loss(tokens, z, loss_mask, E)         # MAR: DiffLoss on the masked tokens
           + out.aux_loss                               # NextStep-1: the text cross-entropy

The recipe name -> objective table is ``driftar_core.train.recipes`` (above both this module and the
Drift-AR objectives in ``driftar_core.method``, so nothing registers itself on import).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from driftar_core.config import ConfigError

Metrics = dict[str, Tensor]


class TrainObjective(nn.Module):
    """Base of every objective: holds the bundle and the training progress.

    Subclasses implement ``forward(images [B, C, H, W], labels [B]) -> (loss scalar, metrics)``;
    metric values are detached scalars and every rank must return the same keys (they are averaged
    across ranks for logging).

    find_unused_parameters: set True when some trainable parameters get no gradient on a step (e.g.
        a phase that freezes part of the model by detaching it); DDP then searches the graph.
    """

    find_unused_parameters: bool = False

    def __init__(self, bundle: nn.Module):
        super().__init__()
        self.bundle = bundle
        self.step = 0
        self.total_steps = 0

    def set_progress(self, step: int, total_steps: int) -> None:
        """Called by the trainer before each forward with the 0-based index of the step about to run.

        Schedules that depend on training progress (Drift-AR's two-phase annealing, Eq. 9-10) read
        ``self.step / self.total_steps``.
        """
        self.step, self.total_steps = step, total_steps

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Metrics]:  # pragma: no cover
        raise NotImplementedError


class BaselineObjective(TrainObjective):
    """The backbone's own recipe: the head's loss on teacher-forced conditions (MAR: DiffLoss)."""

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Metrics]:
        bundle = self.bundle
        with torch.no_grad():
            tokens = bundle.tokenizer.encode(images)                          # [B, L, c]
        out = bundle.backbone.forward_train(tokens, labels)                   # z [B, L, D]
        entropy = None if out.entropy is None else out.entropy.flatten()      # [B L]
        head_loss = bundle.head.loss(tokens.flatten(0, 1), out.z.flatten(0, 1),
                                     out.loss_mask.flatten(), entropy)        # scalar
        metrics: Metrics = {"head_loss": head_loss.detach()}
        loss = head_loss
        if out.aux_loss is not None:
            loss = loss + out.aux_loss
            metrics["aux_loss"] = out.aux_loss.detach()
        return loss, metrics

    @classmethod
    def from_config(cls, run_config: Any, bundle: nn.Module) -> "BaselineObjective":
        if run_config.method:
            raise ConfigError(f"recipe 'baseline' takes no method options, got method keys "
                              f"{sorted(run_config.method)}; remove them or pick another recipe")
        return cls(bundle)


ObjectiveFactory = Callable[[Any, nn.Module], TrainObjective]
