"""Several ``nn.Linear`` layers that read the same input, run as ONE matmul.

At the tiny sizes driftar runs on a CPU, a decode step is bound by the number of kernel calls more
than by FLOPs (on the reference VM a [2, 128] x [128, 128] matmul takes ~5 us and a [2, 128] x
[128, 384] one ~10 us: a few us of every call are its fixed cost, and a decode step makes ~170
calls). Fusing q/k/v (or SwiGLU's gate/up, or the AdaLN modulations of every block) into one
matmul keeps the modules, their parameter names and their state dict exactly as the official
checkpoints have them: only the call changes. The outputs equal the separate layers' up to float round-off of a wider GEMM.

Layers with more than ``MAX_FUSED_NUMEL`` weights run unfused (no second copy of large weights).
The concatenated weight is cached for no-grad inference and rebuilt whenever any parameter changes
(its storage or its version counter: an optimizer step, ``load_state_dict``, ``.to()``). With
gradients enabled, or under tracing / export, it is concatenated on every call, so autograd sees the
original parameters and an exported graph folds the concatenation into a constant.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_CACHE = "_fused_linear_cache"
# Above this many weight elements a layer is compute- or memory-bound, fusing saves nothing worth a
# second copy of its weights (a 14B model would hold its q/k/v and gate/up twice): run it unfused.
MAX_FUSED_NUMEL = 1 << 22


def _concat(linears: Sequence[nn.Linear]) -> tuple[Tensor, Tensor | None]:
    weight = torch.cat([m.weight for m in linears])                              # [sum out, in]
    if all(m.bias is None for m in linears):
        return weight, None
    bias = torch.cat([m.bias if m.bias is not None else m.weight.new_zeros(m.out_features) for m in linears])
    return weight, bias


def fused_params(owner: nn.Module, tag: str, linears: Sequence[nn.Linear]) -> tuple[Tensor, Tensor | None]:
    """The weights and biases of ``linears`` concatenated along the output dim, cached on ``owner``
    under ``tag`` for no-grad eager calls.

    The cache key is every parameter's (data pointer, version counter); the entry keeps the cached
    parameters' storage alive, so no other tensor can take their addresses and a hit means the same
    values: in-place updates (optimizer, EMA, ``load_state_dict``) bump the version, ``.to()`` and a
    replaced module change the pointer.
    """
    if torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return _concat(linears)
    params = [p for m in linears for p in (m.weight, m.bias) if p is not None]
    try:
        key = tuple([(p.data_ptr(), p._version) for p in params])
    except RuntimeError:            # inference tensors keep no version counter: no safe cache key
        return _concat(linears)
    cache = owner.__dict__.setdefault(_CACHE, {})
    hit = cache.get(tag)
    if hit is not None and hit[0] == key:
        return hit[2], hit[3]
    weight, bias = _concat(linears)
    cache[tag] = (key, [p.detach() for p in params], weight, bias)
    return weight, bias


def fused_linear(owner: nn.Module, tag: str, linears: Sequence[nn.Linear], x: Tensor) -> Tensor:
    """``torch.cat([m(x) for m in linears], -1)`` as one matmul (cached on ``owner`` as ``tag``).
    [..., in] -> [..., sum of out]"""
    if sum(m.weight.numel() for m in linears) > MAX_FUSED_NUMEL:
        return torch.cat([m(x) for m in linears], dim=-1)
    weight, bias = fused_params(owner, tag, linears)
    return F.linear(x, weight, bias)
