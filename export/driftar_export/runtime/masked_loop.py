"""The plain AR loop of a masked backbone (MAR) over exported graphs: driftar_core.sampling.generate.

    for each step of the cosine schedule over each sample's order:
        keep = kept_indices(known mask)                       # host: sparse encoder's indices
        z, E, E_global = target_step(tokens, keep, labels, positions)      # ONE target pass
        tokens[positions] = decode(z, E, E_global, noise[positions], cfg_k)  # ONE decoder pass (1 NFE)
    images = detokenize(tokens)

The orders and the noise are inputs (``Runner.draws`` reproduces the PyTorch sampler's draws for a
seed), so the loop itself is deterministic and comparable token for token.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from driftar_core.interfaces import PassCounts
from driftar_export.runtime.graphs import GraphSet
from driftar_export.runtime.host import cfg_at, cosine_mask_lengths, decode, kept_indices


def generate_masked(graphs: GraphSet, model: dict[str, Any], labels: np.ndarray, orders: np.ndarray,
                    noise: np.ndarray, *, num_iter: int, cfg: float, cfg_schedule: str, temperature: float
                    ) -> tuple[np.ndarray, PassCounts]:
    """labels [B], orders [B, L] (a permutation per sample), noise [B, L, 1, c] -> tokens [B, L, c], counts."""
    L, c = model["token_shape"]
    B, use_cfg = len(labels), cfg != 1.0
    null = np.full(B, model["class_num"], np.int64)                           # the CFG rows' label
    rows_labels = np.concatenate([labels, null]) if use_cfg else labels
    tokens = np.zeros((B, L, c), np.float32)
    unknown = np.ones((B, L), bool)
    counts = PassCounts(extra={"backbone_s": 0.0, "head_s": 0.0})
    masked = L
    for nxt in cosine_mask_lengths(L, num_iter):
        positions = np.ascontiguousarray(orders[:, nxt:masked])                # [B, n]
        progress, masked, n = (L - nxt) / L, nxt, masked - nxt
        keep = kept_indices(unknown, model["buffer_size"])                     # [B, kept]
        feeds = {"tokens": tokens, "keep": keep, "labels": rows_labels, "positions": positions}
        if use_cfg:
            feeds.update(tokens=np.concatenate([tokens, tokens]), keep=np.concatenate([keep, keep]),
                         positions=np.concatenate([positions, positions]))
        t0 = time.perf_counter()
        out = graphs.run("target_step", feeds)                                 # z [R, n, D], E [R, n], E_g [R]
        t1 = time.perf_counter()
        z = out["z"].reshape(-1, out["z"].shape[-1])                           # [R n, D]
        e_glob = np.repeat(out["entropy_global"], n)                           # [R n] image mean of E, per token
        eps = np.take_along_axis(noise, positions[:, :, None, None], axis=1).reshape(B * n, *noise.shape[2:])
        x, _ = decode(graphs, z, out["entropy"].reshape(-1), e_glob, eps, cfg_at(cfg, progress, cfg_schedule),
                      temperature)                                             # [B n, c]
        counts.backbone_passes += 1
        counts.head_nfe += 1
        counts.extra["backbone_s"] += t1 - t0
        counts.extra["head_s"] += time.perf_counter() - t1
        np.put_along_axis(tokens, positions[:, :, None], x.reshape(B, n, c), axis=1)  # commit
        np.put_along_axis(unknown, positions, False, axis=1)
    return tokens, counts
