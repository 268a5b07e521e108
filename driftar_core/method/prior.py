"""The entropy-parameterised Gaussian prior of the 1-NFE drift decoder (Drift-AR Eq. 6-7).

Eq. 6 (docs/method.md "Prior (Eq. 6-7)"), entropy -> prior standard deviation:

    sigma(E) = sigma_max * (exp(E / tau) - 1) / (exp(E_max / tau) - 1),   clamped to [sigma_min, sigma_max]

with the official defaults sigma_max = 0.5, tau = 2.0, E_max = 1 (almost linear: sigma(0.5) = 0.219).

driftar adds the lower bound ``sigma_min`` (docs/method.md "Prior (Eq. 6-7)";
"The drift head probe", what failed 2): a prior mean mu(z) with sigma = 0.1 collapsed the one-step head
to the conditional mean, sigma = 1 did not. Eq. 6 as written gives sigma(0) = 0 (and the official code
forces E = 0 at the first causal position), i.e. a deterministic token there. The floor is a clamp, not
an affine remap, so every Eq. 6 value above the floor is unchanged (the Eq. 6 table of docs/method.md still holds)
and sigma(0) = sigma_min.

Eq. 7, the prior itself:

    mu = W_mu z  (per token, ``enc_to_token_proj``: D -> c),   x0 = mu + sigma(E) * eps,   eps ~ N(0, I_c)

The decoder G then maps x0 to the token in one pass (method/drift_decoder.py).
"""
from __future__ import annotations

from driftar_core.method.configs import SIGMA_MAX, TAU_SIGMA  # noqa: F401  (one source of defaults)

import math

import torch
from torch import Tensor, nn

E_MAX = 1.0         # causal-normalised entropy lies in [0, 1] (Eq. 4)
MISSING_ENTROPY = 1.0  # a backbone built without entropy: treat every position as maximally uncertain


def entropy_sigma(entropy: Tensor, sigma_max: float = SIGMA_MAX, tau: float = TAU_SIGMA,
                  sigma_min: float = 0.0, e_max: float = E_MAX) -> Tensor:
    """Eq. 6 with a floor: E [...] in [0, 1] -> sigma [...] in [sigma_min, sigma_max] (same shape, fp32)."""
    if not 0.0 <= sigma_min <= sigma_max:
        raise ValueError(f"need 0 <= sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    e = entropy if entropy.dtype == torch.float32 else entropy.float()
    sigma = torch.expm1(e * (1.0 / tau)) * (sigma_max / math.expm1(e_max / tau))  # Eq. 6
    return sigma.clamp(min=sigma_min, max=sigma_max)


class EntropyPrior(nn.Module):
    """x0 = mu(z) + sigma(E) * eps (Eq. 7) with mu = ``enc_to_token_proj`` (Linear D -> c).

    Phase II freezes ``enc_to_token_proj`` as the official code does (docs/method.md "Two-phase training"):
    the drift objective sets ``requires_grad_(False)`` on this module there; nothing here depends on it.
    The numbers come from ``DriftDecoderConfig`` (the one place driftar's defaults live).
    """

    def __init__(self, z_dim: int, token_dim: int, *, sigma_max: float, tau: float, sigma_min: float):
        super().__init__()
        entropy_sigma(torch.zeros(1), sigma_max, tau, sigma_min)           # validate the numbers once
        self.enc_to_token_proj = nn.Linear(z_dim, token_dim)               # W_mu
        self.sigma_max, self.tau, self.sigma_min = sigma_max, tau, sigma_min

    def sigma(self, entropy: Tensor) -> Tensor:
        """E [N] -> sigma(E) [N] (Eq. 6 with the sigma_min floor)."""
        return entropy_sigma(entropy, self.sigma_max, self.tau, self.sigma_min)

    def mean(self, z: Tensor) -> Tensor:
        """z [N, D] -> mu [N, c]."""
        return self.enc_to_token_proj(z)

    def forward(self, z: Tensor, entropy: Tensor | None, eps: Tensor) -> Tensor:
        """z [N, D], E [N] (None -> E = 1), eps [N, c] or [N, G, c] -> x0 of eps's shape."""
        if entropy is None:
            entropy = z.new_full(z.shape[:1], MISSING_ENTROPY)
        mu = self.mean(z)                                                  # [N, c]
        sigma = self.sigma(entropy).to(mu.dtype)                           # [N]
        if eps.dim() == 3:                                                 # G samples per token
            mu, sigma = mu[:, None], sigma[:, None]                        # [N, 1, c], [N, 1]
        return torch.addcmul(mu, sigma[..., None], eps)                    # [N, (G,) c] mu + sigma eps
