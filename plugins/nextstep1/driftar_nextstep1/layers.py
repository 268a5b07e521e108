"""The Llama-style decoder layer NextStep-1 runs its Qwen2.5 LLM through (nextstep/models/modeling_llama.py).

RMSNorm, rotary position embedding (1-D, one running position over text and image tokens),
grouped-query attention with q/k/v biases and no o_proj bias, SwiGLU MLP. Module names equal the
official ones (``self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``, ``input_layernorm``,
``post_attention_layernorm``) so the state dict maps 1:1 (BACKBONES.md 4.5).

Attention takes an explicit boolean mask [B, 1, Q, K] (True = may attend) and the layer's past
keys/values, and returns the new full keys/values: the KV cache is a plain list owned by the caller.
Only the layer whose attention rows feed the entropy (Drift-AR Eq. 4) materialises the softmax;
the others use SDPA.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KV = tuple[Tensor, Tensor]


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 (LlamaRMSNorm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        h = F.rms_norm(x.float(), x.shape[-1:], eps=self.eps)                 # h * rsqrt(mean(h^2) + eps), one op
        return self.weight * h.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """positions [T] -> (cos, sin) [T, head_dim]; ``inv_freq`` is a non-persistent buffer (as official)."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq[None]               # [T, d/2]
        emb = torch.cat([freqs, freqs], dim=-1)                                # [T, d]
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, H, T, d], cos/sin [T, d] -> x rotated by its position (Llama's rotate-half convention)."""
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    """Grouped-query causal self-attention with RoPE and a KV cache."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, qkv_bias: bool, o_bias: bool):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, hidden // heads
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=o_bias)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, past: KV | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None, KV]:
        """x [B, Q, H], cos/sin [Q, d], mask [B, 1, Q, K] bool, past ([B, Hkv, K - Q, d] x 2)
        -> (out [B, Q, H], attention [B, heads, Q, K] or None, (k, v) [B, Hkv, K, d])."""
        B, Q, _ = x.shape
        q = self.q_proj(x).view(B, Q, self.heads, self.head_dim).transpose(1, 2)       # [B, h, Q, d]
        k = self.k_proj(x).view(B, Q, self.kv_heads, self.head_dim).transpose(1, 2)    # [B, hkv, Q, d]
        v = self.v_proj(x).view(B, Q, self.kv_heads, self.head_dim).transpose(1, 2)    # [B, hkv, Q, d]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)      # [B, hkv, K, d]
        rep = self.heads // self.kv_heads                                               # GQA: share kv heads
        kr, vr = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)      # [B, h, K, d]
        if need_weights:
            logits = (q @ kr.transpose(-2, -1)) * self.head_dim ** -0.5               # [B, h, Q, K]
            attn = logits.masked_fill(~mask, float("-inf")).softmax(-1)                # [B, h, Q, K]
            out = attn @ vr                                                             # [B, h, Q, d]
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask)            # [B, h, Q, d]
        out = out.transpose(1, 2).reshape(B, Q, -1)                                     # [B, Q, h d]
        return self.o_proj(out), attn, (k, v)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)) (LlamaDecoderLayer)."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, intermediate: int, eps: float,
                 qkv_bias: bool, o_bias: bool):
        super().__init__()
        self.input_layernorm = RMSNorm(hidden, eps)
        self.self_attn = Attention(hidden, heads, kv_heads, qkv_bias, o_bias)
        self.post_attention_layernorm = RMSNorm(hidden, eps)
        self.mlp = MLP(hidden, intermediate)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, past: KV | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None, KV]:
        """x [B, Q, H] -> (x [B, Q, H], attention or None, (k, v))."""
        h, attn, kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, past, need_weights)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), attn, kv
