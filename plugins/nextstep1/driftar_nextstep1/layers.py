"""The Llama-style decoder layer NextStep-1 runs its Qwen2.5 LLM through (nextstep/models/modeling_llama.py).

RMSNorm, rotary position embedding (1-D, one running position over text and image tokens),
grouped-query attention with q/k/v biases and no o_proj bias, SwiGLU MLP. Module names equal the
official ones (``self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``, ``input_layernorm``,
``post_attention_layernorm``) so the state dict maps 1:1 (docs/backbones.md "NextStep-1: checkpoint keys").

Attention takes an explicit boolean mask [B, 1, Q, K] (True = may attend) and the layer's past
keys/values, and returns the new full keys/values: the KV cache is a plain list owned by the caller.
Only the layer whose attention rows feed the entropy (Drift-AR Eq. 4) materialises the softmax;
the others use SDPA.

Decoding a tiny model on a CPU is bound by kernel calls, not FLOPs, so the forward passes make as
few as the math allows while the modules stay the official ones: q/k/v and SwiGLU's gate/up each
run as one matmul (``driftar_core.nn.fused``), RoPE rotates q and k in one call, GQA shares the kv
heads by grouping the queries instead of copying keys, and RMSNorm is one fused op.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from driftar_core.nn.fused import fused_linear

KV = tuple[Tensor, Tensor]


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 (LlamaRMSNorm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, x.shape[-1:], self.weight, self.eps)          # one op in fp32
        h = F.rms_norm(x.float(), x.shape[-1:], eps=self.eps)                 # h * rsqrt(mean(h^2) + eps)
        return self.weight * h.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """positions [T] -> (cos, sin) [T, head_dim]; ``inv_freq`` is a non-persistent buffer (as official).

    ``span(start, n, dtype)`` slices a table of positions 0.. computed once (decoding asks for one or a
    few positions per step); its values are the same elementwise formula as ``forward``'s.
    """

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._table: tuple[tuple, Tensor, Tensor] | None = None     # (key, cos, sin) for span()

    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq[None]               # [T, d/2]
        emb = torch.cat([freqs, freqs], dim=-1)                                # [T, d]
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def span(self, start: int, n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(cos, sin) [n, d] of positions start .. start + n - 1."""
        # rebuilt for another dtype / device, a longer span, or a switch in or out of inference mode
        # (inference tensors cannot enter autograd)
        key = (dtype, self.inv_freq.device, self.inv_freq.data_ptr(), torch.is_inference_mode_enabled())
        table = self._table
        if table is None or table[0] != key or table[1].shape[0] < start + n:
            size = max(start + n, 256, 0 if table is None else 2 * table[1].shape[0])
            table = self._table = (key, *self(torch.arange(size, device=self.inv_freq.device), dtype))
        return table[1][start:start + n], table[2][start:start + n]


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
        h, hkv, d = self.heads, self.kv_heads, self.head_dim
        qkv = fused_linear(self, "qkv", (self.q_proj, self.k_proj, self.v_proj), x)    # [B, Q, (h + 2 hkv) d]
        qkv = qkv.view(B, Q, h + 2 * hkv, d).transpose(1, 2)                           # [B, h + 2 hkv, Q, d]
        qk = apply_rope(qkv[:, :h + hkv], cos, sin)                                    # q and k in one rotation
        q, k, v = qk[:, :h], qk[:, h:], qkv[:, h + hkv:]                               # [B, h | hkv | hkv, Q, d]
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)      # [B, hkv, K, d]
        rep = h // hkv                                 # GQA: query head i reads kv head i // rep
        K = k.shape[2]
        if need_weights:
            qg = q.reshape(B, hkv, rep * Q, d)                                          # [B, hkv, rep Q, d]
            mg = mask[:, :, None].expand(B, 1, rep, Q, K).reshape(B, 1, rep * Q, K) if rep > 1 else mask
            logits = (qg @ k.transpose(-2, -1)) * d ** -0.5                             # [B, hkv, rep Q, K]
            attn = logits.masked_fill(~mg, float("-inf")).softmax(-1)                   # [B, hkv, rep Q, K]
            out = (attn @ v).view(B, h, Q, d)                                           # [B, h, Q, d]
            attn = attn.view(B, h, Q, K)                                                # [B, h, Q, K]
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=rep > 1)  # [B, h, Q, d]
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
        gate, up = fused_linear(self, "gate_up", (self.gate_proj, self.up_proj), x).chunk(2, dim=-1)  # [..., I] each
        return self.down_proj(F.silu(gate) * up)


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
