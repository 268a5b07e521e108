"""The IDDPM diffusion of DiffLoss: schedule, respacing, sampler algebra and noise handling."""
from __future__ import annotations

import math

import pytest
import torch
from driftar_mar.diffusion import GaussianDiffusion, cosine_betas, space_timesteps


def test_cosine_schedule_matches_iddpm():
    betas = cosine_betas(1000)
    assert betas.shape == (1000,) and betas.dtype == torch.float64
    assert float(betas.max()) == pytest.approx(0.999) and float(betas[0]) > 0
    abar = torch.cumprod(1 - betas, 0)
    # IDDPM Eq. 17: abar_t = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi/2); exact before the clip
    def f(t: float) -> float:
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    assert float(abar[499]) == pytest.approx(f(500) / f(0), rel=1e-9)


def test_respacing_keeps_iddpm_steps_and_feeds_original_timesteps():
    assert space_timesteps(1000, 100)[:3] == [0, 10, 20] and space_timesteps(1000, 100)[-1] == 999
    assert len(space_timesteps(1000, 100)) == 100 and space_timesteps(1000, 1000) == list(range(1000))
    diff = GaussianDiffusion(10)
    seen: list[int] = []

    def net(x, t):
        seen.extend(t.tolist())
        return torch.zeros(x.shape[0], 2 * x.shape[1])

    diff.p_sample_loop(net, torch.randn(3, 11, 4))
    assert seen == space_timesteps(1000, 10)[::-1] == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    # respaced abar equals the original abar at the kept steps
    base = torch.cumprod(1 - cosine_betas(), 0)
    assert torch.allclose(diff._tables["sqrt_abar"] ** 2, base[diff.timestep_map])


def test_zero_eps_sampler_telescopes_to_x_T_over_sqrt_abar():
    """With eps = 0 each posterior mean is x_t / sqrt(alpha_t), so at temperature 0 the chain returns
    x_T / sqrt(abar_999) exactly: checks the posterior coefficients of the respaced chain."""
    diff = GaussianDiffusion(25)
    noise = torch.randn(5, 26, 3, dtype=torch.float64)
    out = diff.p_sample_loop(lambda x, t: torch.zeros(x.shape[0], 6, dtype=x.dtype), noise.float(), temperature=0.0)
    abar_last = torch.cumprod(1 - cosine_betas(), 0)[-1]
    assert torch.allclose(out.double(), noise[:, 0] / abar_last.sqrt(), rtol=1e-4)


def test_noise_tensor_is_the_only_randomness():
    diff = GaussianDiffusion(8)
    w = torch.randn(4, 8)

    def net(x, t):
        return torch.tanh(x @ w) * 0.1

    noise = torch.randn(6, 9, 4)
    a, b = diff.p_sample_loop(net, noise), diff.p_sample_loop(net, noise.clone())
    assert torch.equal(a, b)
    # temperature 0: only x_T matters; the per-step slices (and the unused last one) do not
    other = noise.clone()
    other[:, 1:] = torch.randn(6, 8, 4)
    assert torch.equal(diff.p_sample_loop(net, noise, 0.0), diff.p_sample_loop(net, other, 0.0))
    assert not torch.equal(diff.p_sample_loop(net, noise, 1.0), diff.p_sample_loop(net, other, 1.0))
    # the last slice is never used (the t = 0 step adds no noise)
    last = noise.clone()
    last[:, -1] = 1e6
    assert torch.equal(diff.p_sample_loop(net, noise), diff.p_sample_loop(net, last))
    with pytest.raises(ValueError, match="noise must be"):
        diff.p_sample_loop(net, torch.randn(6, 8, 4))


def test_hybrid_loss_vlb_trains_only_the_variance():
    diff = GaussianDiffusion(1000)
    x0, noise = torch.rand(64, 4) * 2 - 1, torch.randn(64, 4)
    t = torch.randint(0, 1000, (64,))
    out = torch.zeros(64, 8, requires_grad=True)
    loss = diff.training_losses(lambda x, tt: out, x0, t, noise)
    assert loss.shape == (64,) and torch.isfinite(loss).all()
    # the eps channels get only the MSE gradient: 2 (eps_hat - eps) / c / N after a mean
    loss.mean().backward()
    assert torch.allclose(out.grad[:, :4], -2 * noise / 4 / 64, atol=1e-6)
    assert out.grad[:, 4:].abs().sum() > 0
