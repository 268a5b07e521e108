"""Drift-AR on NextStep-1: the frozen feature map phi and the self-speculative draft.

The generic parts (1-NFE DriftDecoder, drift loss, two-phase objective, speculative sampler) live in
``driftar_core``; this file holds what only NextStep-1 knows (docs/method.md "The official code",
"Draft (Eq. 3)").

phi (drift-loss features of ONE token, [N, c] -> [N, H]): the trained target's own token path,
    ``image_in_projector`` -> the PENULTIMATE decoder layer, frozen. A single token is a length-1
    sequence at position 0 (RoPE is the identity there; attention is the value path).
draft (Eq. 3): a causal NextStep-1 with the target's first ``drift_ar.draft.depth`` layers, embeddings, final
    norm and projectors copied from the trained target, then trained to regress the target's head
    condition z_j (both see x_<j; the draft's row j-1 input predicts the target's feature at j) with
    the draft-target entropy alignment |E_draft_j - sg E_target_j| on rows that see >= 2 keys. It
    keeps its own KV cache, so the speculative sampler runs it ahead on its own drafted tokens.
    It sees exactly the prompts the target saw in the same step (after the target's CFG prompt drop,
    ``TrainOutput.cond``), so the empty-prompt branch that CFG decoding needs is trained too.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from driftar_core.method.configs import LayerDraftConfig
from driftar_nextstep1.config import NextStep1Config
from driftar_nextstep1.nextstep import NextStep1


class NextStep1FeatureMap(nn.Module):
    """phi: tokens [N, c] -> features [N, H]; frozen (requires_grad False), filled by copy_from(target)."""

    def __init__(self, target: NextStep1):
        super().__init__()
        self.image_in_projector = copy.deepcopy(target.image_in_projector)
        self.layer = copy.deepcopy(target.layers[target.entropy_layer])
        self.head_dim = target.config.head_dim
        self.requires_grad_(False)

    @torch.no_grad()
    def copy_from(self, target: NextStep1) -> None:
        """Overwrite with the trained target's current weights."""
        self.image_in_projector.load_state_dict(target.image_in_projector.state_dict())
        self.layer.load_state_dict(target.layers[target.entropy_layer].state_dict())

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.image_in_projector(tokens)[:, None]                           # [N, 1, H]
        cos = h.new_ones(1, self.head_dim)                                     # RoPE at position 0
        sin = h.new_zeros(1, self.head_dim)
        mask = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=h.device)       # one key, visible
        h, _, _ = self.layer(h, cos, sin, mask)                                # [N, 1, H]
        return h[:, 0]                                                         # [N, H]

    def train(self, mode: bool = True) -> "NextStep1FeatureMap":
        return super().train(False)


class NextStep1Draft(NextStep1):
    """The draft: a shallow NextStep-1 (same generation API) with the Eq. 3 + entropy-alignment loss."""


    def __init__(self, config: NextStep1Config, draft: LayerDraftConfig | None = None):
        # prompts and input tokens come from the target's forward (already dropped / noised): never again
        super().__init__(config.model_copy(update={"prompt_drop_prob": 0.0, "input_noise_std": 0.0}))
        draft = draft if draft is not None else LayerDraftConfig()
        self.entropy_weight, self.smooth_l1_beta = draft.entropy_weight, draft.smooth_l1_beta

    @classmethod
    def for_target(cls, config: NextStep1Config) -> "NextStep1Draft":
        """The draft of a target built from ``config``: its first ``config.drift_ar.draft.depth`` layers."""
        draft = config.drift_ar.draft
        return cls(config.model_copy(update={"num_hidden_layers": draft.depth}), draft)

    @torch.no_grad()
    def init_from_target(self, target: NextStep1) -> None:
        """Copy every parameter the draft shares with the trained target (its first layers, embeddings,
        final norm, projectors); fails with the keys that differ, so nothing is dropped silently."""
        want, have = self.state_dict(), target.state_dict()
        missing = sorted(k for k in want if k not in have)
        shapes = [f"{k}: {tuple(have[k].shape)} vs {tuple(v.shape)}" for k, v in want.items()
                  if k in have and have[k].shape != v.shape]
        if missing or shapes:
            raise ValueError(f"cannot initialise the draft from the target: missing keys {missing[:6]}, "
                             f"shape mismatches {shapes[:6]} (draft and target configs must agree)")
        self.load_state_dict({k: have[k] for k in want})

    def loss_terms(self, z: Tensor, target_entropy: Tensor | None = None, *, tokens: Tensor,
                   cond: Any) -> dict[str, Tensor]:
        """z [B, L, H] (target's), target_entropy [B, L], tokens [B, L, c], cond (the target's prompts)
        -> {"loss", "reg", "ent", "draft_entropy_mean"}; z and E are detached (trains only the draft)."""
        out = self.forward_train(tokens, cond)                                 # z_d [B, L, H], E_d [B, L]
        reg = F.smooth_l1_loss(out.z.float(), z.detach().float(), beta=self.smooth_l1_beta)  # Eq. 3
        terms = {"reg": reg}
        loss = reg
        if target_entropy is not None and out.entropy is not None and z.shape[1] > 1:
            e_draft = out.entropy[:, 1:].float()                               # row 0 sees one key: E = 0
            ent = (e_draft - target_entropy.detach().float()[:, 1:]).abs().mean()
            terms.update(ent=ent, draft_entropy_mean=e_draft.mean().detach())
            loss = loss + self.entropy_weight * ent
        terms["loss"] = loss
        return terms


def init_drift_components(bundle: nn.Module) -> None:
    """``DriftARSupport.init_components``: after a trained baseline is loaded into ``bundle.backbone``,
    copy the frozen phi and the layer draft from it (the window draft is distilled later, recipe draft)."""
    if bundle.phi is not None:
        bundle.phi.copy_from(bundle.backbone)
    if isinstance(bundle.draft, NextStep1Draft):
        bundle.draft.init_from_target(bundle.backbone)
