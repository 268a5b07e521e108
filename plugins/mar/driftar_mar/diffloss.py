"""MAR's per-token diffusion head: ``SimpleMLPAdaLN`` (the denoiser) and ``DiffLoss`` (the TokenHead).

Follows MAR (Li et al. 2024, arXiv 2406.11838, section 3 "Diffusion Loss") and LTH14/mar
models/diffloss.py (docs/backbones.md "MAR: DiffLoss head"). Module and parameter names mirror the official
``diffloss.net.*`` keys exactly (time_embed.mlp.0/2, cond_embed, input_proj, res_blocks.{j}.in_ln /
mlp.0 / mlp.2 / adaLN_modulation.1, final_layer.norm_final / adaLN_modulation.1 / linear), so a
checkpoint maps 1:1 with the prefix ``diffloss.`` -> ``head.``. The diffusion math lives in
``driftar_mar.diffusion``; this file only wires the network to it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from driftar_core.config import validate
from driftar_core.nn.adaln import SimpleMLPAdaLN
from driftar_mar.config import DiffLossConfig
from driftar_mar.diffusion import NUM_TIMESTEPS, GaussianDiffusion



# -------------------------------------------------------------------------------------------------
# The head
# -------------------------------------------------------------------------------------------------


class DiffLoss(nn.Module):
    """MAR's Diffusion Loss as a driftar TokenHead (``loss`` to train, ``sample`` to generate).

    Training uses the full 1000-step diffusion; sampling a respaced copy with ``num_sampling_steps``
    steps (nfe). All sampling noise comes in as ``noise [N, nfe + 1, c]``.
    """

    def __init__(self, config: DiffLossConfig, z_dim: int, token_dim: int):
        super().__init__()
        self.config = config
        self.in_channels = token_dim
        self.diffusion_batch_mul = config.diffusion_batch_mul
        self.net = SimpleMLPAdaLN(token_dim, config.width, token_dim * (2 if config.learn_sigma else 1),
                                  z_dim, config.depth)
        self.train_diffusion = GaussianDiffusion(NUM_TIMESTEPS, config.learn_sigma)
        self.gen_diffusion = GaussianDiffusion(config.num_sampling_steps, config.learn_sigma, config.clip_x0)
        self.nfe = self.gen_diffusion.num_steps
        self.noise_shape = (self.nfe + 1, token_dim)

    def loss(self, target: Tensor, z: Tensor, mask: Tensor | None = None,
             entropy: Tensor | None = None) -> Tensor:
        """target [N, c], z [N, D], mask [N] (1 = counts) -> scalar. ``entropy`` is unused by this head.

        Each row is repeated ``diffusion_batch_mul`` times with independent t and noise (torch global
        RNG; the trainer seeds it), and the per-row loss is mask-weighted (MAR's forward_loss). Rows
        with mask 0 are dropped before the network runs: the same value as MAR's weighted mean on
        all rows, without computing losses that are multiplied by zero.
        """
        if mask is not None:
            keep = mask.reshape(-1) > 0
            target, z, weight = target[keep], z[keep], mask.reshape(-1)[keep].to(target.dtype)
        else:
            weight = None
        mul = self.diffusion_batch_mul
        target, z = target.repeat(mul, 1), z.repeat(mul, 1)                     # [mul N, c], [mul N, D]
        t = torch.randint(0, self.train_diffusion.num_steps, (target.shape[0],), device=target.device)
        noise = torch.randn_like(target)
        per_row = self.train_diffusion.training_losses(
            lambda x_t, t_orig: self.net(x_t, t_orig, z), target, t, noise)     # [mul N]
        if weight is None:
            return per_row.mean()
        weight = weight.repeat(mul)
        return (per_row * weight).sum() / weight.sum().clamp_min(1e-12)

    @torch.no_grad()
    def sample(self, z: Tensor, noise: Tensor, cfg: float = 1.0, temperature: float = 1.0,
               entropy: Tensor | None = None) -> Tensor:
        """z [N', D] with N' = N, or 2N rows [cond; uncond] for CFG; noise [N, nfe + 1, c] -> tokens [N, c].

        With CFG both halves see the same x_t (MAR's forward_with_cfg), eps is combined as
        uncond + cfg * (cond - uncond), and the learned variance is the cond half's: MAR runs both
        halves but keeps only the first, whose variance is the cond one.
        """
        n = noise.shape[0]
        if tuple(noise.shape[1:]) != self.noise_shape:
            k, c = self.noise_shape
            raise ValueError(f"noise must be [N, {k}, {c}], got {list(noise.shape)}")
        noise = noise.to(z.dtype)
        c = self.in_channels
        if z.shape[0] == n:
            def net(x: Tensor, t: Tensor) -> Tensor:
                return self.net(x, t, z)                                        # [N, 2c]
        elif z.shape[0] == 2 * n:
            def net(x: Tensor, t: Tensor) -> Tensor:
                t2 = t if t.shape[0] == 1 else torch.cat([t, t])
                out = self.net(torch.cat([x, x]), t2, z)                        # [2N, 2c]
                cond, uncond = out[:n], out[n:]
                eps = uncond[:, :c] + cfg * (cond[:, :c] - uncond[:, :c])       # [N, c]
                return torch.cat([eps, cond[:, c:]], dim=-1)                    # [N, 2c]
        else:
            raise ValueError(f"z has {z.shape[0]} rows; expected N = {n} (noise rows) or 2N with CFG")
        return self.gen_diffusion.p_sample_loop(net, noise, temperature)        # [N, c]


def make_diffloss(config: DiffLossConfig | dict[str, Any], z_dim: int, token_dim: int) -> DiffLoss:
    """Head registry factory ``factory(config, z_dim, token_dim)`` (hookspec driftar_register_heads)."""
    if not isinstance(config, DiffLossConfig):
        config = validate(DiffLossConfig, dict(config), where="diffloss")
    return DiffLoss(config, z_dim, token_dim)
