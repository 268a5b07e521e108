"""Eq. 6-7: entropy -> sigma with the sigma_min floor, and the prior x0 (method/prior.py)."""
from __future__ import annotations

import pytest
import torch

from driftar_core.method.prior import EntropyPrior, entropy_sigma

# the Eq. 6 table of docs/method.md "Prior (Eq. 6-7)" (sigma_max 0.5, tau 2)
TABLE = {0.0: 0.0, 0.1: 0.040, 0.25: 0.103, 0.5: 0.219, 0.75: 0.351, 0.9: 0.438, 1.0: 0.500}


def test_sigma_matches_the_method_table():
    e = torch.tensor(list(TABLE))
    torch.testing.assert_close(entropy_sigma(e), torch.tensor(list(TABLE.values())), atol=6e-4, rtol=0)


def test_sigma_min_is_a_floor_that_keeps_values_above_it():
    e = torch.linspace(0, 1, 101)
    s = entropy_sigma(e, sigma_min=0.1)
    assert float(s.min()) == pytest.approx(0.1)
    assert float(entropy_sigma(torch.tensor(0.0), sigma_min=0.1)) == pytest.approx(0.1)   # sigma(0) = sigma_min
    assert float(entropy_sigma(torch.tensor(0.5), sigma_min=0.1)) == pytest.approx(0.219, abs=6e-4)
    assert bool((s[1:] >= s[:-1]).all())                                                   # monotone
    assert float(entropy_sigma(torch.tensor(3.0))) == pytest.approx(0.5)                   # clamped at sigma_max


def test_bad_sigma_arguments_raise():
    with pytest.raises(ValueError, match="sigma_min"):
        entropy_sigma(torch.zeros(1), sigma_max=0.5, sigma_min=0.6)
    with pytest.raises(ValueError, match="tau"):
        entropy_sigma(torch.zeros(1), tau=0.0)


def test_prior_is_mu_plus_sigma_eps():
    torch.manual_seed(0)
    prior = EntropyPrior(8, 3, sigma_max=0.5, tau=2.0, sigma_min=0.1)
    z, e = torch.randn(5, 8), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    eps = torch.randn(5, 3)
    x0 = prior(z, e, eps)
    torch.testing.assert_close(x0, prior.enc_to_token_proj(z) + prior.sigma(e)[:, None] * eps)
    eps_g = torch.randn(5, 16, 3)
    x0_g = prior(z, e, eps_g)                                                  # G samples per token
    assert x0_g.shape == (5, 16, 3)
    torch.testing.assert_close(x0_g[:, 3], prior(z, e, eps_g[:, 3]))
    torch.testing.assert_close(prior(z, None, eps), prior(z, torch.ones(5), eps))   # missing E -> sigma_max
