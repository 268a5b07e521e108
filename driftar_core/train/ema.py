"""Exponential moving average of a model's weights (MAR keeps ``model_ema``; evaluation uses it).

    ema = EMA(bundle, decay=cfg.optim.ema_decay)   # a frozen deep copy of the bundle
    ... optimizer.step(); ema.update(bundle)       # ema_p <- decay * ema_p + (1 - decay) * p
    generate(ema.module, labels)                   # samples and saved bundles use the EMA weights

Buffers are copied, not averaged (timm ``ModelEmaV3``). Holding a whole module copy makes sampling
with EMA weights a plain call and saving a plain ``ModelBundle.save``.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class EMA:
    """An EMA copy of ``model``; ``module`` is in eval mode with gradients off."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"optim.ema_decay must be in [0, 1], got {decay}")
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay of update number ``step`` (0-based). With warmup: min(decay, (1 + t) / (10 + t)),
        so a freshly initialised part of the model (Drift-AR's new head) does not linger in the average
        (at decay 0.999 a plain EMA still holds 37% of the initial weights after 1000 steps)."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int = 0) -> None:
        """One EMA step towards ``model`` (same architecture as ``self.module``)."""
        ema_p = [p for p in self.module.parameters()]
        live_p = [p.detach() for p in model.parameters()]
        if ema_p:
            torch._foreach_lerp_(ema_p, live_p, 1.0 - self.decay_at(step))
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict[str, Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        from driftar_core.bundle import load_state_strict
        load_state_strict(self.module, state_dict, "EMA weights")
