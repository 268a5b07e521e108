"""Seed discipline: training, tuning and evaluation seeds are disjoint ranges, and every default that
draws quality numbers, sweeps or training data stays inside its own range. Catches: an evaluation on a
seed a sweep tuned on (the kappa and temperature sweeps once shared seed 0 with evaluation), or draft
rollouts drawn with an evaluation seed."""
from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

from driftar_core import seeds
from driftar_core.config import RunConfig


def test_the_ranges_are_disjoint_and_the_defaults_sit_in_theirs():
    ranges = [set(seeds.TRAIN), set(seeds.TUNING), set(seeds.EVAL)]
    assert all(not (a & b) for i, a in enumerate(ranges) for b in ranges[i + 1:])
    assert set(seeds.EVAL_SEEDS) <= set(seeds.EVAL)
    from driftar_core.eval.evaluate import DEFAULT_SEEDS
    assert DEFAULT_SEEDS == seeds.EVAL_SEEDS
    assert RunConfig().train.seed in seeds.TRAIN                      # training runs and their draft rollouts
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "speculative_sweep.py"
    spec = importlib.util.spec_from_file_location("speculative_sweep", path)
    speculative_sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speculative_sweep)
    assert speculative_sweep.TUNING is seeds.TUNING
    src = inspect.getsource(speculative_sweep.main)
    assert "default=TUNING[0]" in src and 'check("tuning"' in src


def test_out_of_range_seeds_are_refused():
    assert seeds.eval_seeds(3) == (2000, 2001, 2002)
    with pytest.raises(ValueError, match="evaluation seeds must lie in 2000..2999"):
        seeds.eval_seeds(3, first=0)
    from driftar_core.bench import run_bench
    with pytest.raises(ValueError, match="evaluation seeds"):
        run_bench(["mar_tiny"], eval_seeds=(0, 1), quality=True, repeats=1, warmup=0, progress=False)


def test_the_sampling_sweep_runs_on_tuning_seeds_only():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "sampling_sweep.py"
    spec = importlib.util.spec_from_file_location("sampling_sweep", path)
    sampling_sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sampling_sweep)
    with pytest.raises(ValueError, match="tuning seeds must lie in 1000..1999"):
        sampling_sweep.sweep(["mar_tiny"], [1.0], [1.0], seeds=(2000,), num_samples=8)
