"""Sampling as a function over (tokenizer, backbone, head): the plain AR loop, with every pass counted.

    state = backbone.new_state(cond)            # MAR: known set + random order; NextStep-1: KV cache
    for step in backbone.plan(state):           # MAR: cosine mask schedule; NextStep-1: raster order
        z, E = backbone.step(state, positions)  # ONE target forward (CFG doubles the batch, not the passes)
        tokens = head.sample(z, noise, cfg_k)   # head.nfe sequential evaluations
        backbone.commit(state, positions, tokens)
    images = tokenizer.decode(state tokens)

Noise for every position is drawn up front from one generator (``draw_noise``), so a fixed seed
reproduces a run and a speculative sampler can hand the draft and the target the same noise.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from driftar_core.interfaces import PassCounts

CfgSchedule = Literal["linear", "constant"]


@dataclass
class SampleOutput:
    tokens: Tensor          # [B, L, c]
    images: Tensor          # [B, C, H, W], clamped to [-1, 1]
    counts: PassCounts      # sequential passes for the whole batch (= per image: the batch runs in parallel)


def cfg_at(cfg: float, progress: float, schedule: CfgSchedule) -> float:
    """Guidance scale of one AR step: MAR/Muse linear ramp ``1 + (cfg - 1) * progress`` or constant."""
    if schedule == "constant":
        return cfg
    return 1.0 + (cfg - 1.0) * progress


def cfg_per_token(cfg: float, schedule: CfgSchedule, length: int) -> list[float]:
    """Guidance scale of each of ``length`` tokens decoded one per AR step in order (token p at progress (p + 1) / L)."""
    return [cfg_at(cfg, (p + 1) / length, schedule) for p in range(length)]


def draw_noise(head: Any, batch: int, length: int, generator: torch.Generator | None, device: Any) -> Tensor:
    """All noise one image consumes, per position: [B, L, k, c] with (k, c) = head.noise_shape."""
    k, c = head.noise_shape
    return torch.randn(batch, length, k, c, generator=generator, device="cpu").to(device)


def gather_positions(x: Tensor, positions: Tensor) -> Tensor:
    """x [B, L, ...], positions [B, n] -> [B, n, ...]."""
    idx = positions.view(*positions.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, idx)


def takes_global_entropy(head: Any) -> bool:
    """Whether ``head.sample`` has Drift-AR's Entropy-AdaLN global input ``entropy_global``."""
    return "entropy_global" in inspect.signature(head.sample).parameters


def global_entropy(out: Any, n: int, wanted: bool) -> dict[str, Tensor]:
    """``entropy_global`` [B' n] (the image-level E of this forward, per token) when the head takes it."""
    eg = out.entropy_global
    if eg is None or not wanted:
        return {}
    return {"entropy_global": eg[:, None].expand(-1, n).reshape(-1)}


@torch.no_grad()
def generate(bundle: Any, cond: Any, *, num_iter: int | None = None, cfg: float | None = None,
             cfg_schedule: CfgSchedule | None = None, temperature: float | None = None,
             generator: torch.Generator | None = None, noise: Tensor | None = None) -> SampleOutput:
    """Sample images for conditions ``cond`` (class labels [B]) with the bundle's plain AR loop.

    Unset arguments fall back to the model config's sampling defaults (``config.sampling``).
    ``noise`` [B, L, k, c] overrides the generator's draw (parity tests, exported runners).
    """
    backbone, head, tok = bundle.backbone, bundle.head, bundle.tokenizer
    defaults = bundle.config.sampling
    num_iter = defaults.num_iter if num_iter is None else num_iter
    cfg = defaults.cfg if cfg is None else cfg
    cfg_schedule = defaults.cfg_schedule if cfg_schedule is None else cfg_schedule
    temperature = defaults.temperature if temperature is None else temperature
    device = bundle.device
    L, _ = tok.token_shape
    B = len(cond)
    use_cfg = cfg != 1.0

    state = backbone.new_state(cond, num_iter=num_iter, cfg=use_cfg, generator=generator)
    if noise is None:
        noise = draw_noise(head, B, L, generator, device)
    use_global = takes_global_entropy(head)
    counts = PassCounts(extra={"backbone_s": 0.0, "head_s": 0.0})    # wall time per stage (bench)
    for step in backbone.plan(state):
        t0 = time.perf_counter()
        out = backbone.step(state, step.positions)                    # z [B', n, D], E [B', n]
        t1 = time.perf_counter()
        counts.backbone_passes += 1
        n = step.positions.shape[1]
        z = out.z.reshape(-1, out.z.shape[-1])                        # [B' n, D]
        ent = None if out.entropy is None else out.entropy.reshape(-1)
        eps = gather_positions(noise, step.positions).flatten(0, 1)   # [B n, k, c]
        tokens = head.sample(z, eps, cfg=cfg_at(cfg, step.progress, cfg_schedule),
                             temperature=temperature, entropy=ent, **global_entropy(out, n, use_global))  # [B n, c]
        counts.head_nfe += head.nfe
        counts.extra["backbone_s"] += t1 - t0
        counts.extra["head_s"] += time.perf_counter() - t1
        backbone.commit(state, step.positions, tokens.view(B, n, -1))
    tokens = backbone.tokens(state)                                   # [B, L, c]
    images = tok.decode(tokens).clamp(-1, 1)
    return SampleOutput(tokens=tokens, images=images, counts=counts)
