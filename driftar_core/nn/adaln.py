"""The AdaLN residual MLP pieces of MAR's SimpleMLPAdaLN (LTH14/mar models/diffloss.py), shared by
every per-token head: MAR's DDPM head, NextStep-1's flow head (same key layout, BACKBONES.md 4.5)
and the Drift-AR decoder. Module and parameter names follow the official checkpoints:
``time_embed.mlp.{0,2}``, ``res_blocks.{j}.{in_ln, mlp.0, mlp.2, adaLN_modulation.1}``,
``final_layer.{norm_final, adaLN_modulation.1, linear}``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

FREQ_EMBED_DIM = 256      # sinusoidal timestep features (DiT / MAR / NextStep frequency_embedding_size)
MAX_PERIOD = 10000.0
LN_EPS = 1e-6             # MAR / NextStep LayerNorm eps


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """AdaLN (DiT): x * (1 + scale) + shift."""
    return x * (1 + scale) + shift


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

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)          # 3 x [N, (1,) W]
        return x + gate * self.mlp(modulate(self.in_ln(x), shift, scale))       # [N, (G,) W]


class FinalLayer(nn.Module):
    """Non-affine LN, AdaLN shift/scale from y, linear to the output channels."""

    def __init__(self, width: int, out_channels: int, eps: float = LN_EPS):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=eps)
        self.linear = nn.Linear(width, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)                # 2 x [N, (1,) W]
        return self.linear(modulate(self.norm_final(x), shift, scale))          # [N, (G,) out]
