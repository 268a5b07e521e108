"""Eq. 4 causal-normalised attention entropy (method/entropy.py)."""
from __future__ import annotations

import math

import torch

from driftar_core.method.entropy import CausalNormalisedEntropy, attention_entropy


def causal_uniform(L: int) -> torch.Tensor:
    return torch.ones(L, L).tril() / torch.arange(1, L + 1)[:, None]       # row r uniform over r keys


def test_uniform_attention_over_r_keys_gives_one():
    attn = torch.full((2, 3, 4, 7), 1 / 7)                                  # full visibility
    torch.testing.assert_close(attention_entropy(attn), torch.ones(2, 4))


def test_one_hot_attention_gives_zero():
    attn = torch.zeros(2, 3, 5, 6)
    attn[..., 2] = 1.0
    torch.testing.assert_close(attention_entropy(attn), torch.zeros(2, 5))


def test_causal_rows_are_normalised_by_log_r():
    L = 6
    visible = torch.ones(L, L, dtype=torch.bool).tril()[None]
    e = attention_entropy(causal_uniform(L)[None, None], visible)          # [1, L]
    torch.testing.assert_close(e, torch.tensor([[0.0] + [1.0] * (L - 1)]))  # row 1 sees one key -> 0
    # row r attending uniformly to 2 of its r keys: log 2 / log r
    attn = torch.zeros(1, 1, L, L)
    attn[..., :2] = 0.5
    e = attention_entropy(attn, visible)
    for r in range(2, L + 1):
        assert math.isclose(float(e[0, r - 1]), math.log(2) / math.log(r), rel_tol=1e-5)


def test_heads_are_averaged_before_the_entropy():
    attn = torch.zeros(1, 2, 1, 4)
    attn[0, 0, 0, 0] = 1.0                                                  # head 0 one-hot on key 0
    attn[0, 1, 0, 1] = 1.0                                                  # head 1 one-hot on key 1
    e = attention_entropy(attn)                                             # mean head = [0.5, 0.5, 0, 0]
    assert math.isclose(float(e), math.log(2) / math.log(4), rel_tol=1e-5)  # not 0 (mean of per-head E)


def test_key_subset_drops_buffer_columns_and_renormalises():
    attn = torch.tensor([[[[0.5, 0.25, 0.25]]]])                            # key 0 = a class buffer
    e = CausalNormalisedEntropy(key_subset=slice(1, None))(attn)
    torch.testing.assert_close(e, torch.ones(1, 1))


def test_a_key_mask_is_the_slice_written_as_columns():
    """keys= (a column mask, for a subset whose start is data) gives what the slice gives. Catches: masked
    columns not renormalised away, or still counted in log |visible|."""
    g = torch.Generator().manual_seed(0)
    attn = torch.softmax(torch.randn(2, 3, 5, 7, generator=g), -1)          # [B, H, Q, K]
    visible = torch.rand(2, 5, 7, generator=g) > 0.3
    keys = (torch.arange(7) >= 2)[None, None]                              # keys 2.. only
    ref = attention_entropy(attn, visible, key_subset=slice(2, None))
    torch.testing.assert_close(attention_entropy(attn, visible, keys=keys), ref, atol=1e-6, rtol=0)
    assert not torch.allclose(attention_entropy(attn, visible), ref)        # the subset matters here
