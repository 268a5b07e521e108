"""AdamW with MAR's weight-decay split, linear warmup then constant LR, and gradient clipping.

MAR (main_mar.py, docs/backbones.md "MAR: training recipe"): AdamW betas (0.9, 0.95), weight decay 0.02 on weight
matrices only; no decay on biases, norms, other 1-D parameters or ANY parameter of the DiffLoss head.
The LR warms up linearly and then stays constant (MAR's default; its cosine option is not used).
Every value comes from ``RunConfig.optim`` (the one place defaults live).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR


def param_groups(model: nn.Module, weight_decay: float,
                 no_decay: Iterable[nn.Parameter] = ()) -> list[dict[str, Any]]:
    """Two AdamW groups over the trainable parameters: decay (>= 2-D and not in ``no_decay``), none."""
    skip = {id(p) for p in no_decay}
    decay, plain = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and id(p) not in skip else plain).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: Any, no_decay: Iterable[nn.Parameter] = ()) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters; ``cfg`` is ``RunConfig.optim``."""
    groups = param_groups(model, cfg.weight_decay, no_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def warmup_constant(warmup_steps: int) -> Callable[[int], float]:
    """LR factor of optimizer step s (0-based): (s + 1) / warmup for s < warmup, then 1.

    Starting at 1/warmup rather than 0 keeps the first step useful.
    """
    def factor(step: int) -> float:
        if warmup_steps <= 0:
            return 1.0
        return min(1.0, (step + 1) / warmup_steps)
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Any) -> LambdaLR:
    """Linear warmup over ``cfg.warmup_steps`` optimizer steps, then constant; step it once per update."""
    return LambdaLR(optimizer, warmup_constant(cfg.warmup_steps))


def clip_gradients(params: Iterable[Tensor], max_norm: float) -> Tensor:
    """Clip the global grad norm to ``max_norm`` (<= 0: no clipping) and return the norm BEFORE clipping."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.zeros(())
    return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
