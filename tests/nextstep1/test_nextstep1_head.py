"""NextStep-1's flow-matching head: time convention, sampler, CFG, noise contract, loss."""
from __future__ import annotations

import pytest
import torch

from driftar_nextstep1.config import FlowHeadConfig
from driftar_nextstep1.flow_head import FlowMatchingHead, sampling_timesteps


def head(steps: int = 5, randomise: bool = True, **kw) -> FlowMatchingHead:
    torch.manual_seed(0)
    h = FlowMatchingHead(FlowHeadConfig(width=32, depth=2, num_sampling_steps=steps, **kw), z_dim=16, token_dim=4)
    if randomise:
        with torch.no_grad():
            for p in h.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    return h.eval()


def test_timesteps_run_from_noise_to_one_minus_last_step():
    torch.testing.assert_close(sampling_timesteps(5, 1.0, 0.04), torch.linspace(0, 0.96, 5))
    shifted = sampling_timesteps(5, 3.0, 0.04)
    assert shifted[0] == 0 and bool((shifted[1:] < torch.linspace(0, 0.96, 5)[1:]).all())  # s > 1 stays noisier


@pytest.mark.parametrize("randomise", [False, True])
def test_fresh_and_random_heads_sample_finite_tokens(randomise):
    h = head(randomise=randomise)
    assert h.nfe == 5 and h.noise_shape == (5, 4)
    noise = torch.randn(6, 5, 4)
    x = h.sample(torch.randn(6, 16), noise)
    assert x.shape == (6, 4) and torch.isfinite(x).all()
    if not randomise:                                  # zero-init output: v = 0, x = x0 + EM noise
        assert torch.isfinite(h.sample(torch.randn(12, 16), noise, cfg=7.5)).all()


def test_sampling_is_a_deterministic_function_of_the_noise():
    h, z, noise = head(), torch.randn(6, 16), torch.randn(6, 5, 4)
    torch.testing.assert_close(h.sample(z, noise), h.sample(z, noise))
    assert not torch.allclose(h.sample(z, noise), h.sample(z, torch.randn(6, 5, 4)))
    with pytest.raises(ValueError, match="noise must be"):
        h.sample(z, torch.randn(6, 4, 4))


def test_cfg_on_the_velocity_and_per_row_scales():
    h, noise = head(), torch.randn(3, 5, 4)
    z = torch.randn(6, 16)                                                      # [cond; uncond]
    torch.testing.assert_close(h.sample(z, noise, cfg=1.0), h.sample(z[:3], noise), atol=1e-6, rtol=1e-5)
    per_row = h.sample(z, noise, cfg=torch.full((3, 1), 4.0))
    torch.testing.assert_close(per_row, h.sample(z, noise, cfg=4.0))
    mixed = h.sample(z, noise, cfg=torch.tensor([[1.0], [4.0], [4.0]]))
    torch.testing.assert_close(mixed[1:], per_row[1:])
    assert not torch.allclose(mixed[0], per_row[0])


@torch.no_grad()
def test_loss_is_the_velocity_mse_with_t_one_at_data():
    h = head(randomise=False)                                                   # v = 0 everywhere
    x = torch.randn(64, 4)
    # with v = 0 the loss is E|x - eps|^2 / c = (|x|^2 / c + 1) in expectation
    torch.manual_seed(0)
    loss = h.loss(x, torch.randn(64, 16))
    assert abs(float(loss) - (float(x.pow(2).mean()) + 1.0)) < 0.3
    masked = h.loss(x, torch.randn(64, 16), mask=torch.zeros(64).index_fill(0, torch.arange(8), 1.0))
    assert torch.isfinite(masked)


def test_sampler_equals_the_official_step_by_step_loop():
    """What sample() hoists out of the loop (condition and time embeddings, step sizes) changes no value."""
    h = head(steps=6)
    z, noise, cfg = torch.randn(6, 16), torch.randn(3, 6, 4), 1.7
    with torch.no_grad():
        ts = h.timesteps
        x = noise[:, 0]

        def velocity(x, t):
            v_c, v_u = h.net(torch.cat([x, x]), t.expand(6), z).chunk(2)
            return v_u + cfg * (v_c - v_u)
        for i in range(len(ts) - 1):
            ti, dt = ts[i], ts[i + 1] - ts[i]
            v = velocity(x, ti)
            x = x + (v + (1 - ti) * (ti * v - x) / (1 - ti)) * dt + torch.sqrt(2 * (1 - ti)) * torch.sqrt(dt) * noise[:, i + 1]
        ref = x + velocity(x, ts[-1]) * h.config.last_step_size
        torch.testing.assert_close(h.sample(z, noise, cfg=cfg), ref, atol=1e-5, rtol=1e-5)
