"""The AdaLN residual MLP pieces of MAR's SimpleMLPAdaLN (LTH14/mar models/diffloss.py), shared by
every per-token head: MAR's DDPM head, NextStep-1's flow head (same key layout, docs/backbones.md "NextStep-1")
and the Drift-AR decoder. Module and parameter names follow the official checkpoints:
``time_embed.mlp.{0,2}``, ``res_blocks.{j}.{in_ln, mlp.0, mlp.2, adaLN_modulation.1}``,
``final_layer.{norm_final, adaLN_modulation.1, linear}``.

Every block's modulation (shift, scale, gate) is a Linear of the same silu(y); ``modulations`` runs
them all (and the final layer's) as ONE matmul (``driftar_core.nn.fused``), which matters where a
head call is a few dozen tiny kernels (a 20-step flow head makes 20 of them per token).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from driftar_core.nn.fused import fused_linear

FREQ_EMBED_DIM = 256      # sinusoidal timestep features (DiT / MAR / NextStep frequency_embedding_size)
MAX_PERIOD = 10000.0
LN_EPS = 1e-6             # MAR / NextStep LayerNorm eps


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """AdaLN (DiT): x * (1 + scale) + shift (as one addcmul)."""
    return torch.addcmul(shift, x, 1 + scale)


class TimestepEmbedder(nn.Module):
    """Timesteps t [N] (integer DDPM indices or continuous flow times, fed raw) -> [N, 256] sinusoids -> MLP [N, W]."""

    def __init__(self, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_EMBED_DIM, width), nn.SiLU(), nn.Linear(width, width))

    @staticmethod
    def timestep_embedding(t: Tensor, dim: int = FREQ_EMBED_DIM) -> Tensor:
        """[cos(t w_k), sin(t w_k)] with w_k = MAX_PERIOD^(-k / (dim/2)) (GLIDE / DiT). [N, dim]"""
        half = dim // 2
        freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]                                 # [N, dim/2]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)            # [N, dim]

    def forward(self, t: Tensor) -> Tensor:
        """t [N] -> [N, W]; when t repeats (DDPM's <= 1000 indices) the MLP runs once per distinct value."""
        dtype = self.mlp[0].weight.dtype
        if t.numel() == 1 or t.is_floating_point():
            return self.mlp(self.timestep_embedding(t).to(dtype))               # [N, W]
        uniq, inverse = torch.unique(t, return_inverse=True)
        return self.mlp(self.timestep_embedding(uniq).to(dtype))[inverse]       # [N, W]


class ResBlock(nn.Module):
    """x + gate * MLP(modulate(LN(x), shift, scale)); (shift, scale, gate) from the condition y."""

    def __init__(self, width: int, mlp_ratio: float = 1.0, eps: float = LN_EPS):
        super().__init__()
        inner = int(width * mlp_ratio)
        self.in_ln = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(width, inner), nn.SiLU(), nn.Linear(inner, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: Tensor, y: Tensor, modulation: Tensor | None = None) -> Tensor:
        """x [N, (G,) W], y [N, (1,) W]; ``modulation`` = adaLN_modulation(y) when the caller has it."""
        mod = self.adaLN_modulation(y) if modulation is None else modulation
        shift, scale, gate = mod.chunk(3, dim=-1)                               # 3 x [N, (1,) W]
        return x + gate * self.mlp(modulate(self.in_ln(x), shift, scale))       # [N, (G,) W]


class FinalLayer(nn.Module):
    """Non-affine LN, AdaLN shift/scale from y, linear to the output channels."""

    def __init__(self, width: int, out_channels: int, eps: float = LN_EPS):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=eps)
        self.linear = nn.Linear(width, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: Tensor, y: Tensor, modulation: Tensor | None = None) -> Tensor:
        mod = self.adaLN_modulation(y) if modulation is None else modulation
        shift, scale = mod.chunk(2, dim=-1)                                     # 2 x [N, (1,) W]
        return self.linear(modulate(self.norm_final(x), shift, scale))          # [N, (G,) out]


def modulations(owner: nn.Module, y: Tensor) -> Sequence[Tensor]:
    """``[b.adaLN_modulation(y) for b in owner.res_blocks] + [owner.final_layer.adaLN_modulation(y)]``
    as one silu and one matmul. y [N, (1,) W] -> per block [N, (1,) 3W], then the final layer's [..., 2W]."""
    blocks = owner.res_blocks
    linears = [b.adaLN_modulation[1] for b in blocks] + [owner.final_layer.adaLN_modulation[1]]
    out = fused_linear(owner, "adaln", linears, F.silu(y))                      # [N, (1,) (3 depth + 2) W]
    width = y.shape[-1]
    return out.split([3 * width] * len(blocks) + [2 * width], dim=-1)


def run_blocks(owner: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``owner``'s res_blocks then final_layer on x [N, (G,) W] under the condition y [N, (1,) W]."""
    *mods, final = modulations(owner, y)
    for block, mod in zip(owner.res_blocks, mods):
        x = block(x, y, mod)                                                    # [N, (G,) W]
    return owner.final_layer(x, y, final)                                       # [N, (G,) out]


class SimpleMLPAdaLN(nn.Module):
    """MAR's per-token AdaLN MLP (``diffloss.net`` / NextStep-1 ``image_head.net``): out(x_t, t, z).

    MAR: eps and variance of x_t at DDPM index t. NextStep-1: the flow velocity at time t (mlp_ratio from its config).
    """

    def __init__(self, in_channels: int, width: int, out_channels: int, z_channels: int, depth: int,
                 mlp_ratio: float = 1.0):
        super().__init__()
        self.in_channels = in_channels
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(z_channels, width)
        self.input_proj = nn.Linear(in_channels, width)
        self.res_blocks = nn.ModuleList([ResBlock(width, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(width, out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """xavier_uniform Linear, N(0, 0.02) time MLP, zero adaLN outputs and final linear (MAR / DiT / NextStep-1)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_embed.mlp[2].weight, std=0.02)
        for block in self.res_blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor, c: Tensor, *, c_embed: Tensor | None = None) -> Tensor:
        """x [N, c_in], t [N] or [1] (shared) original timesteps, c [N, Dz] -> [N, c_out].

        ``c_embed`` = cond_embed(c), for samplers that call the net many times on the same condition
        (or call :meth:`run` with the embedded condition).
        """
        y = self.time_embed(t) + (self.cond_embed(c) if c_embed is None else c_embed)  # [N, W]
        return self.run(x, y)                                                   # [N, c_out]

    def run(self, x: Tensor, y: Tensor) -> Tensor:
        """x [N, c_in] under an embedded condition y = time_embed(t) + cond_embed(c) [N, W] -> [N, c_out]."""
        return run_blocks(self, self.input_proj(x), y)
