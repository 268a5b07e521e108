"""Host-side pieces shared by the exported loops (numpy only; no torch).

Each mirrors one line of the PyTorch samplers, which the tests check:

- ``cfg_at``               driftar_core.sampling.cfg_at (MAR/Muse linear ramp or constant)
- ``cosine_mask_lengths``  driftar_mar.mar.cosine_mask_lengths (MaskGIT/MAR schedule)
- ``kept_indices``         driftar_mar.mar.MAR.kept_indices (buffer + known positions, raster order)
- ``decode``               DriftDecoder.sample around the ``decoder`` graph: temperature, the shared eps
                           of the cond and uncond rows, E missing -> 1, CFG on the outputs
- ``token_layer_norm``     NextStep-1's use_norm feedback (non-affine LayerNorm over c, eps 1e-6)
"""
from __future__ import annotations

import numpy as np

from driftar_core.schedules import cosine_mask_lengths  # noqa: F401  (masked_loop imports it from here)
from driftar_export.runtime.graphs import GraphSet

TOKEN_NORM_EPS = 1e-6          # driftar_nextstep1.nextstep.TOKEN_NORM_EPS


def cfg_at(cfg: float, progress: float, schedule: str) -> float:
    """Guidance scale of one AR step: ``1 + (cfg - 1) * progress`` (linear) or ``cfg`` (constant)."""
    return cfg if schedule == "constant" else 1.0 + (cfg - 1.0) * progress



def kept_indices(mask: np.ndarray, buffer_size: int) -> np.ndarray:
    """mask [B, L] bool (True = unknown, same count per row) -> keep [B, buf + known] int64."""
    B, L = mask.shape
    n_keep = buffer_size + L - int(mask[0].sum())
    dropped = np.concatenate([np.zeros((B, buffer_size), np.int8), mask.astype(np.int8)], axis=1)  # [B, buf+L]
    return np.argsort(dropped, axis=1, kind="stable")[:, :n_keep].astype(np.int64)


def decode(graphs: GraphSet, z: np.ndarray, entropy: np.ndarray | None, entropy_global: np.ndarray | None,
           noise: np.ndarray, cfg: float | np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """z [N', D] (N' = N or 2N: [cond; uncond]), entropy [N'], noise [N, 1, c], cfg scalar or [N, 1]
    -> tokens [N, c], sigma(E) [N'] (one ``decoder`` call)."""
    N = noise.shape[0]
    eps = noise.reshape(N, -1).astype(np.float32) * temperature               # [N, c]
    doubled = z.shape[0] == 2 * N
    if doubled:
        eps = np.concatenate([eps, eps])                                       # [2N, c] same eps, both halves
    elif z.shape[0] != N:
        raise ValueError(f"z has {z.shape[0]} rows but noise has {N}: expected N (no CFG) or 2N ([cond; uncond])")
    elif np.any(np.asarray(cfg) != 1.0):
        raise ValueError(f"cfg={cfg} needs z with 2N rows ([cond; uncond]); got N={N} rows")
    if entropy is None:
        entropy = np.ones(z.shape[0], np.float32)                              # E missing -> 1 (sigma_max)
    if entropy_global is None:
        entropy_global = entropy
    out = graphs.run("decoder", {"z": z.astype(np.float32), "entropy": entropy.astype(np.float32),
                                 "entropy_global": entropy_global.astype(np.float32), "eps": eps})
    x = out["tokens"]                                                          # [N', c]
    if doubled:
        x_c, x_u = x[:N], x[N:]
        x = x_u + cfg * (x_c - x_u)                                            # [N, c]
    return x.astype(np.float32), out["sigma"]


def token_layer_norm(tokens: np.ndarray) -> np.ndarray:
    """NextStep's use_norm: non-affine LayerNorm over each token's c channels. [..., c]"""
    x = tokens.astype(np.float32)
    mean = x.mean(-1, keepdims=True)
    var = np.square(x - mean).mean(-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + np.float32(TOKEN_NORM_EPS))).astype(np.float32)
