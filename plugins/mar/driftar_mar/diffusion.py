"""The Gaussian diffusion behind MAR's DiffLoss: IDDPM's cosine schedule, learned-range variance,
hybrid loss and respaced ancestral sampling, written for driftar (no code copied).

Follows Nichol & Dhariwal 2021 (IDDPM, arXiv 2102.09672) as MAR uses it through DiT's
``create_diffusion(noise_schedule="cosine", learn_sigma=True)`` (LTH14/mar diffusion/*;
docs/backbones.md "Time and noise conventions", "MAR: DiffLoss head"):

* T = 1000 steps, cosine alpha-bar (IDDPM Eq. 17, s = 0.008), betas capped at 0.999.
* The network outputs [eps, v] (2c channels). v interpolates the log-variance between
  log beta_t and log beta-tilde_t (IDDPM Eq. 15), unclamped as in IDDPM.
* Hybrid loss (IDDPM section 3.1): MSE(eps) + L_vlb, the VLB seeing a stop-gradient eps, so the
  variance is learned by the VLB alone and the mean by the MSE alone. Units of L_vlb are bits.
* Respacing (IDDPM section 4): S evenly strided steps of the original T; betas recomputed from the
  kept alpha-bars; the network is always fed the ORIGINAL integer timestep.
* Sampling: ancestral p_sample loop, temperature multiplies only the per-step noise (MAR), no x0
  clipping unless ``clip_x0`` is set (docs/method.md "The drift head probe": an eps-only head needs it; the
  learned variance is MAR's fix).

All noise the sampler consumes is an explicit tensor ``noise [N, S + 1, c]``: index 0 is x_T, index
i + 1 the noise of step i; the last step (t = 0) adds none. Schedules are float64 CPU tensors held as
plain attributes (not buffers: the official state dict has none), cast to float32 per use.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

NUM_TIMESTEPS = 1000      # T of MAR's DiffLoss (train and sampling)
COSINE_S = 0.008          # IDDPM Eq. 17 offset
MAX_BETA = 0.999          # IDDPM: betas clipped so the last step is not singular
BIN_HALF_WIDTH = 1 / 255  # discretized decoder NLL at t = 0 (IDDPM / DDPM, data in [-1, 1], 8 bits)

NetFn = Callable[[Tensor, Tensor], Tensor]  # (x_t [N, c], t_original [N] or [1] long) -> [N, 2c] or [N, c]


# -------------------------------------------------------------------------------------------------
# Schedules
# -------------------------------------------------------------------------------------------------


def cosine_betas(num_timesteps: int = NUM_TIMESTEPS) -> Tensor:
    """betas [T] float64 of the IDDPM cosine schedule: beta_i = 1 - abar((i+1)/T) / abar(i/T)."""
    def alpha_bar(s: Tensor) -> Tensor:
        return torch.cos((s + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2
    i = torch.arange(num_timesteps, dtype=torch.float64, device="cpu")
    betas = 1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps)
    return betas.clamp(max=MAX_BETA)


def space_timesteps(num_timesteps: int, num_steps: int) -> list[int]:
    """The S kept original timesteps, evenly strided with rounding as IDDPM's ``space_timesteps``."""
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"cannot respace {num_timesteps} steps to {num_steps}")
    stride = 1.0 if num_steps == 1 else (num_timesteps - 1) / (num_steps - 1)
    kept, cur = [], 0.0
    for _ in range(num_steps):
        kept.append(round(cur))
        cur += stride
    return sorted(set(kept))


# -------------------------------------------------------------------------------------------------
# Gaussian helpers (IDDPM losses.py, re-derived)
# -------------------------------------------------------------------------------------------------


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log p(x) of a Gaussian integrated over 8-bit bins of [-1, 1] (edge bins open), elementwise."""
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_std_normal_cdf(inv_std * (x - mean + BIN_HALF_WIDTH))
    cdf_min = _approx_std_normal_cdf(inv_std * (x - mean - BIN_HALF_WIDTH))
    log_cdf_plus = cdf_plus.clamp(min=1e-12).log()
    log_one_minus_cdf_min = (1.0 - cdf_min).clamp(min=1e-12).log()
    log_delta = (cdf_plus - cdf_min).clamp(min=1e-12).log()
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


# -------------------------------------------------------------------------------------------------
# The diffusion
# -------------------------------------------------------------------------------------------------


class GaussianDiffusion:
    """A (possibly respaced) discrete diffusion over vectors [N, c]; eps-prediction.

    Index t in 0..S-1 runs over the kept steps; ``timestep_map[t]`` is the original index fed to the net.
    """

    def __init__(self, num_steps: int = NUM_TIMESTEPS, learn_sigma: bool = True,
                 clip_x0: float | None = None, num_timesteps: int = NUM_TIMESTEPS):
        base_abar = torch.cumprod(1.0 - cosine_betas(num_timesteps), 0)
        kept = space_timesteps(num_timesteps, num_steps)
        abar = base_abar[kept]                                                 # [S] float64
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        betas = 1.0 - abar / abar_prev                                         # respaced betas (IDDPM 4)
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)                    # beta-tilde
        post_var_clipped = torch.cat([post_var[1:2], post_var[1:]])            # beta-tilde_0 = 0: use _1
        fixed_large = torch.cat([post_var[1:2], betas[1:]])                    # DiT/IDDPM FIXED_LARGE
        self.num_steps, self.learn_sigma, self.clip_x0 = len(kept), learn_sigma, clip_x0
        self.timestep_map = torch.tensor(kept, dtype=torch.long)               # [S] original indices
        self._tables = {
            "sqrt_abar": abar.sqrt(),
            "sqrt_one_minus_abar": (1.0 - abar).sqrt(),
            "sqrt_recip_abar": (1.0 / abar).sqrt(),
            "sqrt_recipm1_abar": (1.0 / abar - 1.0).sqrt(),
            "post_coef1": betas * abar_prev.sqrt() / (1.0 - abar),             # x0 coefficient
            "post_coef2": (1.0 - abar_prev) * (1.0 - betas).sqrt() / (1.0 - abar),  # x_t coefficient
            "post_logvar": post_var_clipped.log(),                             # min log-variance
            "log_betas": betas.log(),                                          # max log-variance
            "fixed_logvar": fixed_large.log(),
        }
        self._on: dict[tuple[str, torch.device], Tensor] = {}

    def _at(self, name: str, t: Tensor) -> Tensor:
        """table[name][t] as float32 [N, 1] on t's device (tables cached per device)."""
        key = (name, t.device)
        if key not in self._on:
            self._on[key] = self._tables[name].to(t.device)
        return self._on[key][t].float().unsqueeze(-1)

    # ---- forward process -------------------------------------------------------------------------

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar) x0 + sqrt(1 - abar) eps (DDPM Eq. 4). [N, c]"""
        return self._at("sqrt_abar", t) * x0 + self._at("sqrt_one_minus_abar", t) * noise

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and (clipped) log-variance of q(x_{t-1} | x_t, x0) (DDPM Eq. 6-7). [N, c], [N, 1]"""
        mean = self._at("post_coef1", t) * x0 + self._at("post_coef2", t) * x_t
        return mean, self._at("post_logvar", t)

    # ---- reverse process -------------------------------------------------------------------------

    def p_mean_variance(self, out: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Network output [N, 2c] (eps, v) or [N, c] (eps) -> mean, log-variance, predicted x0. [N, c] each"""
        c = x_t.shape[-1]
        eps = out[:, :c]
        if self.learn_sigma:
            frac = (out[:, c:] + 1.0) / 2.0                                     # v in [-1, 1] -> [0, 1]
            logvar = frac * self._at("log_betas", t) + (1.0 - frac) * self._at("post_logvar", t)
        else:
            logvar = self._at("fixed_logvar", t).expand_as(x_t)
        x0 = self._at("sqrt_recip_abar", t) * x_t - self._at("sqrt_recipm1_abar", t) * eps
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
        mean, _ = self.q_posterior(x0, x_t, t)
        return mean, logvar, x0

    def original_t(self, t: Tensor) -> Tensor:
        """Respaced index -> the original integer timestep the network was trained on. [N]"""
        return self.timestep_map.to(t.device)[t]

    # ---- training --------------------------------------------------------------------------------

    def training_losses(self, net: NetFn, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Per-row loss [N]: MSE(eps) (+ L_vlb in bits with stop-grad eps when learn_sigma; IDDPM hybrid)."""
        x_t = self.q_sample(x0, t, noise)                                       # [N, c]
        out = net(x_t, self.original_t(t))                                      # [N, 2c]
        c = x0.shape[-1]
        mse = ((noise - out[:, :c]) ** 2).mean(-1)                              # [N]
        if not self.learn_sigma:
            return mse
        frozen = torch.cat([out[:, :c].detach(), out[:, c:]], dim=-1)           # VLB trains only v
        true_mean, true_logvar = self.q_posterior(x0, x_t, t)
        mean, logvar, _ = self.p_mean_variance(frozen, x_t, t)
        kl = normal_kl(true_mean, true_logvar, mean, logvar).mean(-1) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar).mean(-1) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl)                                       # [N] bits
        return mse + vb

    # ---- sampling --------------------------------------------------------------------------------

    @torch.no_grad()
    def p_sample_loop(self, net: NetFn, noise: Tensor, temperature: float = 1.0) -> Tensor:
        """Ancestral sampling from x_T = noise[:, 0]; step i uses noise[:, i + 1] * temperature. -> [N, c]

        noise: [N, S + 1, c]. The last step (t = 0) returns the mean (no noise).
        """
        if noise.dim() != 3 or noise.shape[1] != self.num_steps + 1:
            raise ValueError(f"noise must be [N, {self.num_steps + 1}, c] (x_T plus one per step), "
                             f"got {list(noise.shape)}")
        x = noise[:, 0]                                                         # [N, c] x_T, not scaled
        for i, t_idx in enumerate(range(self.num_steps - 1, -1, -1)):
            t = torch.full((1,), t_idx, dtype=torch.long, device=x.device)     # shared by all rows
            mean, logvar, _ = self.p_mean_variance(net(x, self.original_t(t)), x, t)
            if t_idx > 0:
                x = mean + torch.exp(0.5 * logvar) * noise[:, i + 1] * temperature  # [N, c]
            else:
                x = mean
        return x
