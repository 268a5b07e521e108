"""Phase II of the two-phase schedule (Eq. 10) freezes the prior mean W_mu, as the official code does: the
drifting field assumes a fixed source distribution. Catches: W_mu still updated in phase II (by its
gradient, or by AdamW's momentum from phase I when it gets a zero gradient instead of none)."""
from __future__ import annotations

import torch

from driftar_core.method.objective import DriftARMethodConfig, DriftARObjective, prepare_drift
from driftar_mar.build import build_mar
from driftar_mar.config import MARConfig
from mar_small import SMALL


def test_phase_two_leaves_the_prior_mean_unchanged_under_adamw():
    torch.manual_seed(0)
    b = build_mar(MARConfig(**SMALL, head_type="drift", drift_ar=dict(
        decoder=dict(width=32, depth=2, num_generated=8), draft=dict(dim=32, depth=1, num_heads=2)))).train()
    prepare_drift(b)
    obj = DriftARObjective(b, DriftARMethodConfig(max_tokens=32))
    opt = torch.optim.AdamW([p for p in b.parameters() if p.requires_grad], lr=1e-2)
    images, labels = torch.rand(4, 1, 16, 16) * 2 - 1, torch.tensor([1, 2, 3, 4])
    w_mu, g_in = b.head.prior.enc_to_token_proj.weight, b.head.input_proj.weight

    def step(t: int) -> None:
        obj.set_progress(t, 10)
        loss, _ = obj(images, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    before = w_mu.detach().clone()
    step(0)                                                           # phase I: W_mu trains (momentum builds)
    assert not torch.equal(w_mu, before)
    frozen, g_before = w_mu.detach().clone(), g_in.detach().clone()
    for t in (8, 9):                                                  # phase II (t >= 0.8 T)
        step(t)
    assert torch.equal(w_mu, frozen)                                  # no gradient, no momentum step
    assert not torch.equal(g_in, g_before)                            # the decoder G keeps training
