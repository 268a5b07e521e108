"""The Drift-AR training objective (Eq. 9-10), generic over backbones with a per-token drift head.

    tokens = tokenizer.encode(images)                       # [B, L, c]
    z, mask, E = backbone.forward_train(tokens, labels)     # E: penultimate-block entropy, same forward
    L_drift = head.loss(tokens, z, mask, E)                 # Eq. 8 on G >= 16 samples per token
    L_draft = draft.loss(sg z, sg E)                        # Eq. 3 + draft-target entropy alignment
    L = alpha(t) * L_draft + (1 - alpha(t)) * L_drift       # Eq. 9; alpha 0.95 -> 0 over 80% of steps
    phase II (t >= 0.8 T): backbone, draft and the prior mean W_mu frozen (no grad), L = L_drift  (Eq. 10)

Training starts from a trained baseline (``model.init_from``); ``prepare_drift`` then copies the
frozen feature map phi and the draft's blocks from that trained target (docs/method.md "Two-phase training").
The draft sees only stop-gradient target features, so in phase I the backbone is trained by the
drift loss alone; with Adam, alpha then mostly re-weights two disjoint parameter sets.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from driftar_core.config import Strict, validate
from driftar_core.interfaces import DriftARSupport, TrainableDraft
from driftar_core.method.drift_decoder import DriftDecoder
from driftar_core.method.schedule import TwoPhaseSchedule
from driftar_core.train.objective import Metrics, TrainObjective


class DriftARMethodConfig(Strict):
    """``[method]`` of the ``drift`` recipe."""

    alpha0: float = 0.95                 # Eq. 10 (official default)
    freeze_fraction: float = 0.8         # T_freeze / T (official default)
    max_tokens: int | None = 1024        # drift-loss tokens per step (random subset of the loss tokens);
                                         # the head runs G of them each, so this bounds the step cost
    train_draft: bool = True             # Eq. 3 draft regression + entropy alignment
    # Eq. 9 lets the drift loss fine-tune the backbone in phase I. On the digits at the head's lr that
    # wrecked the trained baseline within 400 steps (striped samples, grad norm 27), while the same head
    # on a frozen backbone learned cleanly; so the recipe keeps the trained target fixed (as phase II
    # does) unless asked. True follows the paper.
    train_backbone: bool = False


def drift_support(bundle: nn.Module) -> DriftARSupport:
    """What the bundle's backbone plugin declared for Drift-AR (``BackboneSpec.drift``)."""
    from driftar_core.config import ConfigError
    from driftar_core.plugins import registries
    support = registries().backbones.get(bundle.backbone_name).drift
    if support is None:
        raise ConfigError(f"the {bundle.backbone_name!r} backbone does not declare Drift-AR support "
                          "(BackboneSpec.drift, docs/plugins.md 'Drift-AR'): the drift recipe cannot train it")
    return support


def prepare_drift(bundle: nn.Module) -> None:
    """Copy phi and the draft from the (just loaded) trained target, as the backbone plugin declared."""
    drift_support(bundle).init_components(bundle)


class DriftARObjective(TrainObjective):
    # phase II runs the backbone and draft without gradient: DDP must allow unused parameters
    find_unused_parameters = True

    def __init__(self, bundle: nn.Module, config: DriftARMethodConfig):
        super().__init__(bundle)
        self.config = config
        self.support = drift_support(bundle)
        if not isinstance(bundle.head, DriftDecoder):
            raise ValueError("the drift recipe needs a model with the 1-NFE drift decoder "
                             f"(e.g. model.arch=mar_tiny_drift), got a {type(bundle.head).__name__} head")

    def schedule(self) -> TwoPhaseSchedule:
        return TwoPhaseSchedule(total=max(self.total_steps, 1), alpha0=self.config.alpha0,
                                freeze_fraction=self.config.freeze_fraction)

    def _subsample(self, mask: Tensor) -> Tensor:
        """Keep at most max_tokens of the loss tokens (uniformly at random, global torch RNG)."""
        k = self.config.max_tokens
        flat = mask.flatten()
        idx = torch.nonzero(flat > 0).flatten()
        if k is None or len(idx) <= k:
            return flat
        keep = idx[torch.randperm(len(idx), device=idx.device)[:k]]
        out = torch.zeros_like(flat)
        out[keep] = flat[keep]
        return out

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Metrics]:
        bundle, sched = self.bundle, self.schedule()
        phase2 = sched.phase(self.step) == "II"
        alpha = sched.alpha(self.step)
        # Phase II freezes the prior mean W_mu as the official code does: the drifting field assumes a
        # fixed source distribution x0 = mu(z) + sigma(E) eps. No gradient (not a zero one), so Adam's
        # momentum cannot move it either (the trainer zeroes grads to None).
        bundle.head.prior.requires_grad_(not phase2)
        with torch.no_grad():
            tokens = bundle.tokenizer.encode(images)                          # [B, L, c]
        frozen = phase2 or not self.config.train_backbone
        with torch.set_grad_enabled(not frozen):
            out = bundle.backbone.forward_train(tokens, labels)               # z [B, L, D], E [B, L]
        z, ent = out.z, out.entropy
        if frozen:
            z, ent = z.detach(), None if ent is None else ent.detach()
        mask = self._subsample(out.loss_mask)                                 # [B L]
        ent_flat = None if ent is None else ent.flatten()
        ent_glob = None                                                       # the head then uses each token's E
        if ent is not None and self.support.entropy == "image_mean":
            ent_glob = ent.mean(1, keepdim=True).expand_as(ent).flatten()     # image mean of E (as in sampling)
        terms = bundle.head.loss_terms(tokens.flatten(0, 1), z.flatten(0, 1), mask, ent_flat,
                                       entropy_global=ent_glob)
        metrics: Metrics = {"drift_loss": terms.loss.detach(), "alpha": torch.tensor(alpha)}
        metrics.update({k: v.detach() for k, v in terms.monitors.items()})
        if ent is not None:
            metrics["entropy_mean"] = ent.mean().detach()
            metrics["entropy_std"] = ent.std().detach()                       # 0 = the official code's collapse
        loss = terms.loss if phase2 else (1.0 - alpha) * terms.loss
        if self.config.train_draft and isinstance(bundle.draft, TrainableDraft) and not phase2:
            fed = tokens if out.inputs is None else out.inputs.detach()        # what the target consumed
            inputs = {"tokens": fed, "cond": out.cond} if self.support.draft_inputs else {}
            d = bundle.draft.loss_terms(z.detach(), None if ent is None else ent.detach(), **inputs)
            loss = loss + alpha * d["loss"]
            metrics.update({f"draft_{k}" if not k.startswith("draft") else k: v.detach() for k, v in d.items()})
        return loss, metrics

    @classmethod
    def from_config(cls, run_config: Any, bundle: nn.Module) -> "DriftARObjective":
        return cls(bundle, validate(DriftARMethodConfig, run_config.method, where="method"))
