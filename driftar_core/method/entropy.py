"""Causal-normalised attention entropy (Drift-AR Eq. 4; docs/method.md "Entropy E (Eq. 4)").

E_r = -(1 / log r) * sum_c A_rc log A_rc, where A is the head-averaged attention row r of the
target's penultimate block and r is the number of keys row r can see ("causal-normalised": log r
under a causal mask, log |visible| under any other mask). E is in [0, 1]; a row that sees a single
key has E = 0. It is computed from attention the forward already produced: never an extra pass.

Head averaging happens BEFORE the entropy (as the official code does): the entropy of the mean
attention, not the mean of per-head entropies.
"""
from __future__ import annotations

import torch
from torch import Tensor

PROB_FLOOR = 1e-8  # log clamp (docs/method.md "Entropy E (Eq. 4)")


def attention_entropy(attn: Tensor, visible: Tensor | None = None, key_subset: slice | None = None,
                      keys: Tensor | None = None) -> Tensor:
    """attn [B, H, Q, K] (rows sum to 1, masked keys 0), visible [B|1, Q, K] bool -> E [B, Q] in [0, 1].

    key_subset: restrict to a slice of keys (e.g. content tokens without the class buffer) and
    renormalise rows first, as the official code does for its buffer columns. keys: the same as a bool
    column mask broadcastable to [B, Q, K] (a subset whose start is data, e.g. a traced position): the
    other columns weigh exact zeros.
    """
    dtype = torch.promote_types(attn.dtype, torch.float32)         # fp16/bf16 -> fp32; fp64 stays fp64
    a = attn.to(dtype).mean(dim=1)                                 # [B, Q, K] head-averaged
    if visible is None:
        visible = torch.ones_like(a, dtype=torch.bool)
    else:
        visible = visible.expand_as(a)
    if key_subset is not None:
        a, visible = a[..., key_subset], visible[..., key_subset]
    if keys is not None:
        a, visible = a * keys, visible & keys
    if key_subset is not None or keys is not None:
        a = a / a.sum(-1, keepdim=True).clamp_min(PROB_FLOOR)      # renormalise rows
    a = a * visible
    h = -(a * a.clamp_min(PROB_FLOOR).log()).sum(-1)               # [B, Q] nats
    r = visible.sum(-1).to(dtype)                                  # keys each row can see
    e = torch.where(r > 1, h / r.clamp_min(2).log(), torch.zeros_like(h))
    return e.clamp(0.0, 1.0)                                       # [B, Q]


class CausalNormalisedEntropy:
    """EntropyEstimator protocol object around :func:`attention_entropy`."""

    def __init__(self, key_subset: slice | None = None):
        self.key_subset = key_subset

    def __call__(self, attn: Tensor, visible: Tensor | None = None) -> Tensor:
        return attention_entropy(attn, visible, self.key_subset)
