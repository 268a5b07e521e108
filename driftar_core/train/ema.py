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

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"optim.ema_decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model`` (same architecture as ``self.module``)."""
        ema_p = [p for p in self.module.parameters()]
        live_p = [p.detach() for p in model.parameters()]
        if ema_p:
            torch._foreach_lerp_(ema_p, live_p, 1.0 - self.decay)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict[str, Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        from driftar_core.train.checkpoint import load_weights
        load_weights(self.module, state_dict, "EMA weights")
