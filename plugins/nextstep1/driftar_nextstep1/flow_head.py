"""NextStep-1's per-token flow-matching head: ``SimpleMLPAdaLN`` (the velocity net) and ``FlowMatchingHead``.

Follows stepfun-ai/NextStep-1 nextstep/models/modeling_fm_head.py (docs/backbones.md "NextStep-1"). Parameter
names equal the official ``image_head.net.*`` keys (time_embed.mlp.0/2, cond_embed, input_proj,
res_blocks.{j}.in_ln / mlp.0 / mlp.2 / adaLN_modulation.1, final_layer.adaLN_modulation.1 / linear),
so a checkpoint maps 1:1 with the prefix ``image_head.`` -> ``head.``. The network is MAR's
DiffLoss AdaLN MLP design (driftar_mar.diffloss) with NextStep's differences: an mlp_ratio, a raw
t in [0, 1] fed to the time embedder, and a velocity-only output.

Time convention (docs/backbones.md "Time and noise conventions"; NOT TransDiff's): t = 1 is data.

    x_t = t x + (1 - t) eps,   v = x - eps,   t = sigmoid(n), n ~ N(0, 1)         (training)

Sampling (``FlowMatchingHead.sample``): timesteps linspace(0, 1 - last_step_size, N), warped by the
shift s as t' = t / (s - (s - 1) t); N - 1 Euler-Maruyama steps of the SDE whose drift is
v + (1 - t) score with score = (t v - x) / (1 - t) (the official ``get_score_from_velocity``) and
diffusion sqrt(2 (1 - t)); then one deterministic Euler step of size ``last_step_size``. CFG is on
the velocity: v = v_u + cfg (v_c - v_u), both halves seeing the same x_t. All noise comes in as
``noise [N, N_steps, c]``: row 0 is the initial x, rows 1.. the Euler-Maruyama increments.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from driftar_core.nn.adaln import SimpleMLPAdaLN
from driftar_nextstep1.config import FlowHeadConfig



# -------------------------------------------------------------------------------------------------
# The head
# -------------------------------------------------------------------------------------------------


def sampling_timesteps(num_steps: int, shift: float, last_step_size: float) -> Tensor:
    """linspace(0, 1 - last_step_size, N) warped by t / (s - (s - 1) t). [N] float32"""
    t = torch.linspace(0.0, 1.0 - last_step_size, num_steps)
    return t / (shift - (shift - 1.0) * t)


class FlowMatchingHead(nn.Module):
    """NextStep-1's flow-matching head as a driftar TokenHead (``loss`` to train, ``sample`` to generate)."""

    def __init__(self, config: FlowHeadConfig, z_dim: int, token_dim: int):
        super().__init__()
        self.config, self.token_dim = config, token_dim
        self.net = SimpleMLPAdaLN(token_dim, config.width, token_dim, z_dim, config.depth, config.mlp_ratio)
        self.nfe = config.num_sampling_steps                    # N - 1 stochastic + 1 deterministic
        self.noise_shape = (config.num_sampling_steps, token_dim)  # x_0 + N - 1 Wiener increments
        self.register_buffer("timesteps", sampling_timesteps(config.num_sampling_steps, config.timesteps_shift,
                                                             config.last_step_size), persistent=False)

    def loss(self, target: Tensor, z: Tensor, mask: Tensor | None = None,
             entropy: Tensor | None = None) -> Tensor:
        """target [N, c], z [N, D], mask [N] (1 = counts) -> scalar masked MSE on the velocity.

        Rows are repeated ``batch_mul`` times (fm_head_batch_mul) with independent logit-normal t and
        noise from the torch global RNG (the trainer seeds it). ``entropy`` is unused by this head.
        """
        mul = self.config.batch_mul
        target, z = target.repeat(mul, 1), z.repeat(mul, 1)                     # [mul N, c], [mul N, D]
        noise = torch.randn_like(target)
        t = torch.sigmoid(torch.randn(target.shape[0], device=target.device)).to(target.dtype)  # logit-normal
        x_t = t[:, None] * target + (1 - t[:, None]) * noise                    # t = 1 is data
        v = self.net(x_t, t, z)                                                 # [mul N, c]
        per_row = (v.float() - (target - noise).float()).pow(2).mean(-1)        # [mul N]
        if mask is None:
            return per_row.mean()
        weight = mask.reshape(-1).to(per_row.dtype).repeat(mul)
        return (per_row * weight).sum() / (weight.sum() + 1e-8)

    @torch.no_grad()
    def sample(self, z: Tensor, noise: Tensor, cfg: float | Tensor = 1.0, temperature: float = 1.0,
               entropy: Tensor | None = None) -> Tensor:
        """z [N', D] (N' = N, or 2N rows [cond; uncond] for CFG), noise [N, steps, c] -> tokens [N, c].

        ``cfg`` is a float or a per-row tensor [N, 1] (speculative rounds mix positions). ``temperature``
        scales every noise draw (NextStep has none; 1.0 is the official sampler).
        """
        n = noise.shape[0]
        if tuple(noise.shape[1:]) != self.noise_shape:
            raise ValueError(f"noise must be [N, {self.noise_shape[0]}, {self.noise_shape[1]}], got {list(noise.shape)}")
        if z.shape[0] not in (n, 2 * n):
            raise ValueError(f"z has {z.shape[0]} rows; expected N = {n} (noise rows) or 2N with CFG")
        doubled = z.shape[0] == 2 * n
        noise = noise.to(z.dtype) * temperature
        # What every step shares is computed once per call (the same values the net would compute per
        # step): the condition's embedding, the time embeddings of the N timesteps, the step sizes.
        net = self.net
        c_embed = net.cond_embed(z)                                             # [N', W]
        t_embed = net.time_embed(self.timesteps.to(z.device, z.dtype))          # [N_steps, W]
        ts = self.timesteps.tolist()

        def velocity(x: Tensor, i: int) -> Tensor:
            y = t_embed[i] + c_embed                                            # [N', W] time + condition
            if not doubled:
                return net.run(x, y)                                            # [N, c]
            v_c, v_u = net.run(torch.cat([x, x]), y).chunk(2)                   # [N, c] each
            return v_u + cfg * (v_c - v_u)                                      # CFG on the velocity

        x = noise[:, 0]                                                         # [N, c] t = 0 is noise
        for i in range(len(ts) - 1):                                            # Euler-Maruyama
            ti, dt = ts[i], ts[i + 1] - ts[i]
            v = velocity(x, i)
            score = (ti * v - x) / (1 - ti)                                     # get_score_from_velocity
            drift = v + (1 - ti) * score
            x = x + drift * dt + math.sqrt(2 * (1 - ti)) * math.sqrt(dt) * noise[:, i + 1]
        return x + velocity(x, len(ts) - 1) * self.config.last_step_size      # final deterministic step


def make_flow_head(config: FlowHeadConfig | dict[str, Any], z_dim: int, token_dim: int) -> FlowMatchingHead:
    """Head registry factory ``factory(config, z_dim, token_dim)`` (hookspec driftar_register_heads)."""
    if not isinstance(config, FlowHeadConfig):
        from driftar_core.config import validate
        config = validate(FlowHeadConfig, dict(config), where="flow head")
    return FlowMatchingHead(config, z_dim, token_dim)
