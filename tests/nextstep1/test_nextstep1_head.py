"""NextStep-1's flow-matching head: time convention, sampler, CFG, noise contract, loss."""
from __future__ import annotations

import pytest
import torch
from driftar_nextstep1.config import FlowHeadConfig
from driftar_nextstep1.flow_head import FlowMatchingHead, sampling_timesteps
from torch import nn


def head(steps: int = 5, randomise: bool = True, **kw) -> FlowMatchingHead:
    torch.manual_seed(0)
    h = FlowMatchingHead(FlowHeadConfig(width=32, depth=2, num_sampling_steps=steps, **kw), z_dim=16, token_dim=4)
    if randomise:
        with torch.no_grad():
            for p in h.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    return h.eval()


def test_timesteps_run_from_noise_to_one_minus_last_step():
    """Catches: the shift applied the other way round (t' = s t / (1 + (s - 1) t) makes s > 1 LESS noisy),
    ignored, or the grid not ending at 1 - last_step_size. The official NextStep-1 shift
    t' = t / (s - (s - 1) t) at hand-computed points: s = 3 on linspace(0, 0.96, 5) = 0, 0.24, 0.48, 0.72,
    0.96 gives 0, 0.24 / 2.52 = 2/21, 0.48 / 2.04 = 4/17, 0.72 / 1.56 = 6/13, 0.96 / 1.08 = 8/9."""
    torch.testing.assert_close(sampling_timesteps(5, 1.0, 0.04), torch.linspace(0, 0.96, 5))
    torch.testing.assert_close(sampling_timesteps(5, 3.0, 0.04), torch.tensor([0.0, 2 / 21, 4 / 17, 6 / 13, 8 / 9]))
    # s = 0.5 (less noisy): 0.5 / (0.5 + 0.5 * 0.5) = 2/3 at t = 0.5 on linspace(0, 0.5, 3)
    torch.testing.assert_close(sampling_timesteps(3, 0.5, 0.5), torch.tensor([0.0, 0.25 / 0.625, 2 / 3]))
    shifted = sampling_timesteps(5, 3.0, 0.04)
    assert shifted[0] == 0 and bool((shifted[1:] < torch.linspace(0, 0.96, 5)[1:]).all())  # s > 1 stays noisier


@pytest.mark.parametrize("shift", [0.5, 1.0, 3.0, 7.0])
def test_timestep_shift_is_the_sd3_shift_of_the_noise_level(shift):
    """Catches: a shift formula that is not NextStep-1's. Written differently: on the noise level
    sigma = 1 - t the shift is SD3's sigma' = s sigma / (1 + (s - 1) sigma); it is increasing, keeps t = 0 (pure
    noise) fixed and is the identity at s = 1."""
    n, last = 50, 0.04
    t = torch.linspace(0.0, 1.0 - last, n, dtype=torch.float64)
    sigma = 1 - t
    expected = 1 - shift * sigma / (1 + (shift - 1) * sigma)
    ts = sampling_timesteps(n, shift, last)
    torch.testing.assert_close(ts.double(), expected, atol=1e-6, rtol=1e-6)
    assert ts[0] == 0 and bool((ts.diff() > 0).all()) and float(ts[-1]) < 1
    if shift == 1.0:
        torch.testing.assert_close(ts.double(), t, atol=1e-7, rtol=0)


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


class ExactVelocity(nn.Module):
    """Stands in for the velocity net: the exact flow velocity E[x - eps | x_t] of data x ~ N(mu, sd^2 I)
    under x_t = t x + (1 - t) eps (t = 1 is data), derived from the joint Gaussian of (x - eps, x_t):

        v(x_t, t) = mu + (t sd^2 - (1 - t)) / (t^2 sd^2 + (1 - t)^2) (x_t - t mu)

    mu comes in as the first c entries of z; the embedded condition is [mu, t] (width c + 1)."""

    def __init__(self, c: int, sd: float):
        super().__init__()
        self.c, self.sd = c, sd

    def cond_embed(self, z):
        return torch.cat([z[:, :self.c], z.new_zeros(len(z), 1)], 1)

    def time_embed(self, t):
        return torch.cat([t.new_zeros(len(t), self.c), t[:, None]], 1)

    def run(self, x, y):
        mu, t = y[:, :self.c], y[:, self.c:]
        s2 = self.sd ** 2
        return mu + (t * s2 - (1 - t)) / (t * t * s2 + (1 - t) ** 2) * (x - t * mu)

    def forward(self, x, t, z):
        return self.run(x, self.cond_embed(z) + self.time_embed(t.reshape(-1).expand(len(x))))


def exact_head(steps: int, sd: float) -> FlowMatchingHead:
    h = FlowMatchingHead(FlowHeadConfig(width=8, depth=1, num_sampling_steps=steps), z_dim=4, token_dim=4)
    h.net = ExactVelocity(4, sd)
    return h.eval()


MU_C, MU_U = torch.tensor([1.0, -0.5, 0.0, 2.0]), torch.tensor([0.0, 0.5, -1.0, 1.0])


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_sampler_draws_the_data_distribution_of_an_exact_velocity(cfg):
    """Catches: a wrong score (sign or scale), a wrong diffusion coefficient (sqrt(2 t), or none), the
    velocity evaluated at the next step's time, the final Euler step missing, and CFG halves swapped.

    Given the exact velocity of Gaussian data N(mu, 0.5^2), the sampler (20 Euler-Maruyama steps + the final
    step, the official signature default) must return samples with mean mu and std 0.5. With CFG both halves
    are Gaussians of the same sd and v is affine in mu, so guidance on the velocity samples
    N(mu_u + cfg (mu_c - mu_u), sd^2). Measured on 10 noise seeds with 16000 samples: |mean error| <= 0.010 and
    |std / sd - 1| <= 0.030 at either cfg (asserted < 0.03 and < 0.06); over the same seeds the bugs above give
    std errors >= 0.13 (velocity one step late), 0.51 (sqrt(2 t)), 0.75 (no diffusion), 3.4 (score sign) or
    mean errors >= 0.072 (no final step) and 5.0 (CFG halves swapped, cfg 3)."""
    steps, sd, n = 20, 0.5, 16000
    h = exact_head(steps, sd)
    noise = torch.randn(n, steps, 4, generator=torch.Generator().manual_seed(0))
    if cfg == 1.0:
        x, target = h.sample(MU_C.expand(n, 4), noise), MU_C
    else:
        x = h.sample(torch.cat([MU_C.expand(n, 4), MU_U.expand(n, 4)]), noise, cfg=cfg)
        target = MU_U + cfg * (MU_C - MU_U)
    assert float((x.mean(0) - target).abs().max()) < 0.03, x.mean(0)
    assert float((x.std(0) / sd - 1).abs().max()) < 0.06, x.std(0)


def test_a_point_mass_is_reached_exactly_whatever_the_noise():
    """Catches: a final step that is not a full Euler step to t = 1 (with shift 1 it starts at 1 - last_step_size).
    For data at one point mu the velocity is (mu - x) / (1 - t), so that step lands on mu exactly."""
    h = exact_head(5, 0.0)
    noise = torch.randn(64, 5, 4, generator=torch.Generator().manual_seed(1)) * 3
    torch.testing.assert_close(h.sample(MU_C.expand(64, 4), noise), MU_C.expand(64, 4), atol=1e-4, rtol=0)


class ForwardOnly(nn.Module):
    """A trained-style net seen only through forward(x, t, z): the embedded condition carries (z, t) and
    run() calls the real net's forward at that t, so nothing the sampler hoists is reused."""

    def __init__(self, net: nn.Module, z_dim: int):
        super().__init__()
        self.net, self.z_dim = net, z_dim

    def cond_embed(self, z):
        return torch.cat([z, z.new_zeros(len(z), 1)], 1)

    def time_embed(self, t):
        return torch.cat([t.new_zeros(len(t), self.z_dim), t[:, None]], 1)

    def run(self, x, y):
        return self.net(x, y[:, -1], y[:, :-1])


def test_hoisted_embeddings_equal_per_step_forwards():
    """Catches: sample() feeding the net's blocks something other than time_embed(t) + cond_embed(z) (the time
    embedding dropped or added twice, the condition not embedded): with a random net it must equal the same
    sampler driven through the net's plain forward(x, t, z) at every step."""
    h = head(steps=6)
    z, noise = torch.randn(6, 16), torch.randn(3, 6, 4)
    with torch.no_grad():
        hoisted = h.sample(z, noise, cfg=1.7)
        h.net = ForwardOnly(h.net, 16)
        torch.testing.assert_close(h.sample(z, noise, cfg=1.7), hoisted, atol=1e-5, rtol=1e-5)
