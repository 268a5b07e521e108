"""Drift-AR on MAR: the frozen feature map phi and the copies made from a trained MAR target.

The generic parts (1-NFE DriftDecoder, drift loss, draft, two-phase objective) live in
``driftar_core.method``; this file holds what only MAR knows: which of its modules phi and the
draft are copied from (docs/method.md "The official code").

phi (drift-loss features of ONE token, [N, c] -> [N, Dd]): the trained target's own token path,
    z_proj -> z_proj_ln -> decoder_embed -> the PENULTIMATE decoder block, frozen. A single token is a
    length-1 sequence for the block (its attention is then the value path). Frozen and copied from the
    trained target, never random or still training (the drifting paper's feature encoder is fixed).
draft (Eq. 3): a causal transformer over the target's features z in raster order, its blocks
    initialised from the target's first decoder blocks and decoder_norm (timm naming on both sides).
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class MARFeatureMap(nn.Module):
    """phi: tokens [N, c] -> features [N, Dd]; frozen (requires_grad False), filled by copy_from(mar)."""

    def __init__(self, mar: nn.Module):
        super().__init__()
        block = mar.decoder_blocks[max(len(mar.decoder_blocks) - 2, 0)]
        self.z_proj = copy.deepcopy(mar.z_proj)
        self.z_proj_ln = copy.deepcopy(mar.z_proj_ln)
        self.decoder_embed = copy.deepcopy(mar.decoder_embed)
        self.block = copy.deepcopy(block)
        self.requires_grad_(False)

    @torch.no_grad()
    def copy_from(self, mar: nn.Module) -> None:
        """Overwrite with the trained target's current weights."""
        block = mar.decoder_blocks[max(len(mar.decoder_blocks) - 2, 0)]
        for dst, src in ((self.z_proj, mar.z_proj), (self.z_proj_ln, mar.z_proj_ln),
                         (self.decoder_embed, mar.decoder_embed), (self.block, block)):
            dst.load_state_dict(src.state_dict())

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.decoder_embed(self.z_proj_ln(self.z_proj(tokens)))      # [N, Dd]
        h, _ = self.block(h[:, None])                                     # [N, 1, Dd]
        return h[:, 0]                                                    # [N, Dd]

    def train(self, mode: bool = True) -> "MARFeatureMap":
        return super().train(False)                                       # always eval (no dropout)


def init_drift_components(bundle: nn.Module) -> None:
    """``DriftARSupport.init_components``: after a trained baseline is loaded into ``bundle.backbone``,
    copy the frozen phi and the draft's blocks from it."""
    mar = bundle.backbone
    if bundle.phi is not None:
        bundle.phi.copy_from(mar)
    if bundle.draft is not None:
        k = len(bundle.draft.blocks)
        bundle.draft.init_from_blocks(list(mar.decoder_blocks[:k]), mar.decoder_norm)
