"""Seed ranges, disjoint by construction: what trains, what tunes and what evaluates never share a seed.

    TRAIN   0 ..   999   training runs (``train.seed``) and what they draw: batches, masks, the
                         window draft's self-distillation rollouts (seeded with the run's seed)
    TUNING  1000 .. 1999 sweeps of sampling settings (cfg, temperature, kappa, draft length), run for a
                         model and its baseline over the same grid (benchmarks/speculative_sweep.py)
    EVAL    2000 .. 2999 evaluation only: ``driftar eval``, ``driftar bench``'s quality, the zoo cards

A number reported as quality comes from EVAL seeds that no sweep and no training run used; every
card records its evaluation seeds. ``tests/core/test_seeds.py`` checks that the defaults stay in
their ranges.
"""
from __future__ import annotations

from typing import Iterable

TRAIN = range(0, 1000)
TUNING = range(1000, 2000)
EVAL = range(2000, 3000)
EVAL_SEEDS = (EVAL[0], EVAL[1], EVAL[2])     # the default three evaluation seeds


def eval_seeds(count: int, first: int | None = None) -> tuple[int, ...]:
    """``count`` evaluation seeds from ``first`` (default: the start of EVAL); all must lie in EVAL."""
    start = EVAL[0] if first is None else first
    seeds = tuple(range(start, start + count))
    check("evaluation", seeds, EVAL)
    return seeds


def check(what: str, seeds: Iterable[int], allowed: range) -> None:
    """Refuse seeds outside their range (an evaluation on a tuning or training seed is not held out)."""
    bad = [s for s in seeds if s not in allowed]
    if bad:
        raise ValueError(f"{what} seeds must lie in {allowed.start}..{allowed.stop - 1} (driftar_core.seeds), "
                         f"got {bad[:5]}: seeds are split between training, tuning and evaluation")
