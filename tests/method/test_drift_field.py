"""The drift field and loss (method/drift_loss.py; docs/method.md "The drifting recipe", "Invariants")."""
from __future__ import annotations

import pytest
import torch

from driftar_core.method.drift_loss import (TEMPERATURES, drift_field, drift_loss, drift_monitors,
                                            location_problems, sample_spread)


def randn(*shape, seed=0, shift=0.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) + shift


def test_field_is_antisymmetric_in_positives_and_negatives():
    x = randn(4, 16, 3, seed=0)
    p, q = randn(4, 6, 3, seed=1, shift=0.7), randn(4, 9, 3, seed=2, shift=-0.4)
    f_pq = drift_field(x, pos=p, neg=q, self_negatives=False)      # V_{p,q}
    f_qp = drift_field(x, pos=q, neg=p, self_negatives=False)      # V_{q,p}
    assert f_pq.scale == pytest.approx(float(f_qp.scale))
    for v_pq, v_qp in zip(f_pq.V_R, f_qp.V_R):
        assert v_pq.abs().max() > 1e-3                              # non-trivial
        torch.testing.assert_close(v_pq, -v_qp, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(f_pq.V, -f_qp.V, atol=1e-4, rtol=1e-4)


def test_field_vanishes_when_generated_and_positive_sets_coincide():
    x = randn(4, 16, 3, seed=0)
    q = randn(4, 12, 3, seed=3)
    f = drift_field(x, pos=q, neg=q.clone(), self_negatives=False)  # p = q as sample sets
    for v in f.V_R:                                                 # raw fields; the per-R RMS
        assert v.abs().max() < 1e-5                                 # normalisation would blow round-off up


def test_field_is_balanced_when_distributions_match_and_pulls_when_shifted():
    """Training form (self-negatives): with q = p the mean push is ~0; with p shifted it points at p."""
    x = randn(16, 64, 2, seed=0)
    along = {}
    for shift in (0.0, 1.0):
        y = randn(16, 64, 2, seed=1, shift=0.0) + torch.tensor([shift, 0.0])
        v = drift_field(x, y).V_R[-1]                               # R = 0.2
        along[shift] = float(v[..., 0].mean() / v.pow(2).mean().sqrt())
    assert abs(along[0.0]) < 0.15
    assert along[1.0] > 0.5


def test_loss_changes_when_tokens_of_an_image_are_permuted_across_positions():
    B, G, L, S, Cp = 2, 16, 8, 3, 4
    gen, pos = randn(B, G, L, S, seed=0), randn(B, Cp, L, S, seed=1, shift=0.5)
    perm = torch.randperm(L, generator=torch.Generator().manual_seed(2))
    gen_perm = gen.clone()
    gen_perm[:, 0] = gen[:, 0, perm]                                # shuffle one image's tokens

    # driftar: each location is a problem over the G images -> spatial layout is supervised
    per_location = [float(drift_loss(location_problems(g), location_problems(pos)).loss) for g in (gen, gen_perm)]
    assert abs(per_location[0] - per_location[1]) > 1e-3

    # control, the official layout: the L tokens of one image are the set -> invariant (issue C1)
    def official(g):
        x = g.flatten(0, 1)                                         # [B G, L, S]
        y = pos.flatten(1, 2).repeat_interleave(G, 0)              # [B G, Cp L, S] pooled tokens
        return float(drift_loss(x, y).loss)
    assert official(gen) == pytest.approx(official(gen_perm), rel=1e-5)


def test_loss_is_finite_and_gradients_flow_only_through_x():
    x = randn(5, 16, 4, seed=0).requires_grad_()
    pos = randn(5, 3, 4, seed=1).requires_grad_()
    neg = randn(5, 2, 4, seed=2).requires_grad_()
    out = drift_loss(x, pos, neg)
    assert torch.isfinite(out.loss)
    assert 0 < float(out.loss.detach()) < 3 * len(TEMPERATURES) ** 2          # sum of 3 unit-RMS forces
    out.loss.backward()
    assert pos.grad is None and neg.grad is None
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # the gradient is that of an MSE to the stop-gradient goal x~ + V
    f = out.field
    expected = -2.0 * f.V / x.numel() / f.unit
    torch.testing.assert_close(x.grad, expected, atol=1e-6, rtol=1e-4)


def test_problem_weights_mask_problems():
    x = randn(4, 16, 2, seed=0).requires_grad_()
    pos = randn(4, 1, 2, seed=1)
    w = torch.tensor([1.0, 0.0, 1.0, 0.0])
    drift_loss(x, pos, weight=w).loss.backward()
    assert x.grad[1].abs().max() == 0 and x.grad[3].abs().max() == 0 and x.grad[0].abs().max() > 0
    z = randn(2, 16, 2, seed=0).requires_grad_()
    out = drift_loss(z, pos[:2], weight=torch.zeros(2))
    assert float(out.loss.detach()) == 0.0


def test_half_precision_inputs_are_computed_in_fp32():
    x = randn(3, 16, 4, seed=0).to(torch.bfloat16).requires_grad_()
    out = drift_loss(x, randn(3, 2, 4, seed=1).to(torch.bfloat16))
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert x.grad.dtype == torch.bfloat16


def test_collapse_monitors():
    pos = randn(8, 32, 3, seed=1)
    healthy = drift_monitors(randn(8, 16, 3, seed=0), pos, scale=torch.tensor(1.0))
    assert 0.8 < float(healthy.spread_ratio) < 1.25
    collapsed = drift_monitors(randn(8, 1, 3, seed=0).expand(8, 16, 3), pos, scale=torch.tensor(1.0))
    assert float(collapsed.spread_ratio) < 1e-3
    one_positive = drift_monitors(randn(8, 16, 3), pos[:, :1], scale=torch.tensor(1.0))
    assert torch.isnan(one_positive.spread_ratio) and float(one_positive.gen_spread) > 0
    assert set(healthy.as_dict("raw_")) == {"raw_scale", "raw_gen_spread", "raw_pos_spread", "raw_spread_ratio"}
    # the loss reports s: the mean pairwise distance in raw units
    out = drift_loss(randn(8, 16, 3) * 10, pos * 10)
    assert 10 < float(out.monitors.scale) < 40
    assert float(sample_spread(randn(4, 2000, 3, seed=5) * 2)) == pytest.approx(2.0, rel=0.05)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="P, G, S"):
        drift_loss(randn(4, 16, 3), randn(4, 3))
