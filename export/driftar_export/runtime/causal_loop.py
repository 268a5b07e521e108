"""Plain and speculative decoding of a causal backbone (NextStep-1) over exported graphs.

``generate_causal`` is driftar_core.sampling.generate with one token per step in raster order;
``speculative_causal`` is driftar_core.speculative.speculative_generate, step for step (read its
module docstring for the algorithm): the same noise per position for the draft's and the target's
decoder calls, the same acceptance rule (longest prefix with |x^ - x*| / sqrt(c) <= tau0 + kappa *
sigma(E_target), the min over the batch), the same rollback and commit, the same early stop and
entropy EMA, the same pass counting (target passes = rounds). sigma(E) comes out of the ``decoder``
graph, so the tolerance uses the model's own Eq. 6. A feature-level window draft
(runtime/causal_window.py) proposes k features and gets its k tokens from ONE decoder call.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from driftar_core.interfaces import PassCounts
from driftar_export.runtime.causal_state import CausalModel
from driftar_export.runtime.graphs import GraphSet
from driftar_export.runtime.host import cfg_at, decode


def head_tokens(graphs: GraphSet, z: np.ndarray, entropy: np.ndarray, noise: np.ndarray, cfgs: list[float],
                temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """z [R, m, D] of m consecutive positions, noise [B, m, 1, c], one CFG scale per position
    -> tokens [B, m, c], sigma(E) [R, m] (rows laid out as speculative.head_tokens lays them)."""
    B, m = noise.shape[:2]
    cfg: float | np.ndarray = cfgs[0]
    if any(c != cfgs[0] for c in cfgs):
        cfg = np.tile(np.asarray(cfgs, np.float32), B)[:, None]               # [B m, 1]
    x, sigma = decode(graphs, z.reshape(-1, z.shape[-1]), entropy.reshape(-1), None,
                      noise.reshape(B * m, *noise.shape[2:]), cfg, temperature)
    return x.reshape(B, m, -1), sigma.reshape(-1, m)


def generate_causal(graphs: GraphSet, target: CausalModel, labels: np.ndarray, noise: np.ndarray, *,
                    cfg: float, cfg_schedule: str, temperature: float) -> tuple[np.ndarray, PassCounts]:
    """labels [B], noise [B, L, 1, c] -> tokens [B, L, c] (after use_norm), counts."""
    L = target.L
    state = target.new_state(labels, cfg != 1.0)
    counts = PassCounts(extra={"backbone_s": 0.0, "head_s": 0.0})
    for j in range(L):
        t0 = time.perf_counter()
        z, e = target.step(state)                                              # [R, 1, H], [R, 1]
        t1 = time.perf_counter()
        x, _ = head_tokens(graphs, z, e, noise[:, j:j + 1], [cfg_at(cfg, (j + 1) / L, cfg_schedule)], temperature)
        counts.backbone_passes += 1
        counts.head_nfe += 1
        counts.extra["backbone_s"] += t1 - t0
        counts.extra["head_s"] += time.perf_counter() - t1
        target.commit(state, x)
    return state.tokens, counts


def speculative_causal(graphs: GraphSet, target: CausalModel, draft: CausalModel, labels: np.ndarray,
                       noise: np.ndarray, *, draft_len: int, tau0: float, kappa: float, cfg: float, cfg_schedule: str,
                       temperature: float, early_stop_gamma: float | None = None, entropy_ema_init: float | None = None,
                       entropy_ema_decay: float = 0.9) -> tuple[np.ndarray, PassCounts]:
    """labels [B], noise [B, L, 1, c] -> tokens [B, L, c], counts (extra: speculative_generate's statistics)."""
    if draft_len < 0 or tau0 < 0 or kappa < 0:
        raise ValueError(f"draft_len, tau0 and kappa must be >= 0, got {draft_len}, {tau0}, {kappa}")
    L, c = target.L, target.c
    B, use_cfg = len(labels), cfg != 1.0
    tstate, dstate = target.new_state(labels, use_cfg), draft.new_state(labels, use_cfg)
    cfgs = [cfg_at(cfg, (p + 1) / L, cfg_schedule) for p in range(L)]
    stats: dict[str, Any] = {"rounds": 0, "drafted": 0, "accepted": 0, "accepted_per_sample": 0.0, "early_stops": 0,
                             "draft_head_nfe": 0, "backbone_s": 0.0, "draft_s": 0.0, "head_s": 0.0}
    counts = PassCounts()
    ema, n = entropy_ema_init, 0
    feature_level = getattr(draft, "feature_level", False)
    while n < L:
        # 1. draft up to k tokens ahead, on the draft's own outputs
        k, drafts = min(draft_len, L - 1 - n), []
        if feature_level:                      # k draft passes, ONE decoder call; round 0 seeds the window
            k = k if n else 0
            if k:
                t0 = time.perf_counter()
                z_d, e_d = draft.propose(dstate, noise[:, n:n + k, 0])         # [R, k, H], [R, k]
                ran = k
                if early_stop_gamma is not None and ema is not None and k > 1:
                    low = (e_d[:B].astype(np.float32).mean(0) < early_stop_gamma * ema).tolist()
                    if True in low[:k - 1]:
                        stats["early_stops"] += 1
                        k = low.index(True) + 1
                        z_d, e_d = z_d[:, :k], e_d[:, :k]
                t1 = time.perf_counter()
                x_hat, _ = head_tokens(graphs, z_d, e_d, noise[:, n:n + k], cfgs[n:n + k], temperature)
                drafts.append(x_hat)
                stats["draft_s"] += t1 - t0
                stats["head_s"] += time.perf_counter() - t1
                counts.draft_passes += ran                                     # every pass that ran
                counts.head_nfe += 1
                stats["draft_head_nfe"] += 1
        for m in range(0 if feature_level else k):
            p, t0 = n + m, time.perf_counter()
            z_d, e_d = draft.step(dstate)                                      # [R, 1, H], [R, 1]
            t1 = time.perf_counter()
            x_hat, _ = head_tokens(graphs, z_d, e_d, noise[:, p:p + 1], cfgs[p:p + 1], temperature)  # [B, 1, c]
            stats["draft_s"] += t1 - t0
            stats["head_s"] += time.perf_counter() - t1
            draft.commit(dstate, x_hat)
            drafts.append(x_hat)
            counts.draft_passes += 1
            counts.head_nfe += 1
            stats["draft_head_nfe"] += 1
            if (early_stop_gamma is not None and ema is not None and m + 1 < k
                    and float(e_d[:B].mean()) < early_stop_gamma * ema):
                stats["early_stops"] += 1                                      # over-confident draft: stop here
                k = m + 1
                break
        drafted = np.concatenate(drafts, 1) if drafts else np.zeros((B, 0, c), np.float32)  # [B, k, c]

        # 2. verify all k drafts in ONE target pass; the target's tokens with the SAME noise
        t0 = time.perf_counter()
        z, e = target.verify(tstate, drafted)                                  # [R, k+1, H], [R, k+1]
        t1 = time.perf_counter()
        x_star, sigma = head_tokens(graphs, z, e, noise[:, n:n + k + 1], cfgs[n:n + k + 1], temperature)
        stats["backbone_s"] += t1 - t0
        stats["head_s"] += time.perf_counter() - t1
        counts.backbone_passes += 1
        counts.head_nfe += 1

        # 3. accept the longest prefix within tau0 + kappa * sigma(E_target)  (V1, METHOD.md 4.2.1)
        e_target = e[:B].astype(np.float32)                                    # [B, k+1]
        dist = np.sqrt(np.square(drafted - x_star[:, :k]).mean(-1))           # [B, k]
        tol = tau0 + kappa * sigma[:B, :k]                                     # [B, k]
        per_sample = np.cumprod((dist <= tol).astype(np.int64), axis=1).sum(1)  # [B]
        a = int(per_sample.min()) if k else 0

        # 4. roll both caches back to the accepted prefix; commit one exact target token
        target.rollback(tstate, k - a)
        target.commit(tstate, x_star[:, a:a + 1])
        if feature_level:                                                      # the target's z, E of n .. n+a
            draft.observe(dstate, z[:, :a + 1], e[:, :a + 1], noise[:, n:n + a + 1, 0])
        else:
            draft.rollback(dstate, k - a)
            draft.commit(dstate, x_star[:, a:a + 1])
        mean_e = float(e_target[:, :a + 1].mean())
        ema = mean_e if ema is None else entropy_ema_decay * ema + (1 - entropy_ema_decay) * mean_e
        stats["rounds"] += 1
        stats["drafted"] += k
        stats["accepted"] += a
        stats["accepted_per_sample"] += float(per_sample.astype(np.float32).mean())
        n += a + 1

    rounds, drafted_total = stats["rounds"], max(stats["drafted"], 1)
    counts.extra = {
        "rounds": rounds,
        "acceptance_rate": stats["accepted"] / drafted_total,
        "acceptance_rate_per_sample": stats["accepted_per_sample"] / drafted_total,
        "mean_accepted_len": stats["accepted"] / rounds,
        "tokens_per_target_pass": L / rounds,
        "drafted": stats["drafted"], "accepted": stats["accepted"], "early_stops": stats["early_stops"],
        "draft_head_nfe": stats["draft_head_nfe"],
        "backbone_s": stats["backbone_s"], "draft_s": stats["draft_s"], "head_s": stats["head_s"],
    }
    return tstate.tokens, counts
