"""The baseline head: a few-step flow-matching MLP (rectified flow: x_t = (1 - t) eps + t x, v = x - eps),
sampled with ``flow_steps`` Euler steps. It satisfies driftar_core.interfaces.TokenHead."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class FlowHead(nn.Module):
    def __init__(self, token_dim: int, z_dim: int, width: int, steps: int):
        super().__init__()
        self.nfe, self.noise_shape = steps, (1, token_dim)
        self.net = nn.Sequential(nn.Linear(token_dim + z_dim + 1, width), nn.SiLU(), nn.Linear(width, width),
                                 nn.SiLU(), nn.Linear(width, token_dim))

    def velocity(self, x: Tensor, t: Tensor, z: Tensor) -> Tensor:
        """x [N, c], t [N], z [N, D] -> v [N, c]."""
        return self.net(torch.cat([x, z, t[:, None]], -1))

    def loss(self, target: Tensor, z: Tensor, mask: Tensor | None = None, entropy: Tensor | None = None) -> Tensor:
        """target [N, c], z [N, D], mask [N] -> scalar."""
        eps, t = torch.randn_like(target), torch.rand(len(target), device=target.device)
        x_t = (1 - t[:, None]) * eps + t[:, None] * target
        err = (self.velocity(x_t, t, z) - (target - eps)).pow(2).mean(-1)            # [N]
        return err.mean() if mask is None else (err * mask).sum() / mask.sum().clamp_min(1)

    @torch.no_grad()
    def sample(self, z: Tensor, noise: Tensor, cfg: float | Tensor = 1.0, temperature: float = 1.0,
               entropy: Tensor | None = None) -> Tensor:
        """z [N', D] (N' = 2N with CFG: [cond; uncond]), noise [N, 1, c] -> tokens [N, c]."""
        N = noise.shape[0]
        x = noise[:, 0] * temperature
        guided = z.shape[0] == 2 * N
        for i in range(self.nfe):
            t = torch.full((N,), i / self.nfe, device=z.device, dtype=z.dtype)
            if guided:
                v_c, v_u = self.velocity(x.repeat(2, 1), t.repeat(2), z).chunk(2)
                v = v_u + cfg * (v_c - v_u)
            else:
                v = self.velocity(x, t, z)
            x = x + v / self.nfe
        return x
