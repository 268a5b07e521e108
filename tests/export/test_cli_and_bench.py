"""``driftar run`` (with --compare) and ``driftar bench`` with an exported runtime next to eager PyTorch."""
from __future__ import annotations

import re

import numpy as np

from cli_runner import run_cli as run_stdio  # tests/cli_runner.py


def run_cli(argv, capsys):
    """(exit code, stdout + stderr)"""
    code, out, err = run_stdio(argv, capsys)
    return code, out + err


def test_run_writes_images_and_compares_with_pytorch(mar_bundle, capsys, tmp_path):
    code, out = run_cli(["run", "--bundle", str(mar_bundle), "-n", "5", "--batch-size", "3", "--out",
                         str(tmp_path / "grid.png"), "--compare", "--threads", "1"], capsys)
    assert code == 0, out
    assert (tmp_path / "grid.png").stat().st_size > 100
    assert "target passes 5, head NFE 5" in out                                # num_iter 5, one NFE per step
    diff = float(re.search(r"max \|pixel difference\| ([0-9.e+-]+)", out).group(1))
    assert diff < 1e-4 and "0 of 255 grey levels" in out


def test_run_npz_with_overrides(causal_bundle, capsys, tmp_path):
    code, out = run_cli(["run", "--bundle", str(causal_bundle), "-n", "2", "--class", "7", "--out",
                         str(tmp_path / "s.npz"), "--sampler", "plain", "--cfg", "1.0"], capsys)
    assert code == 0, out
    data = np.load(tmp_path / "s.npz")
    assert data["images"].shape == (2, 8, 8) and data["labels"].tolist() == [7, 7]
    assert "sampler: plain" in out and "target passes 16" in out
    code, out = run_cli(["run", "--bundle", str(causal_bundle), "--out", str(tmp_path / "x.png"), "--compare"], capsys)
    assert code != 0 and "does not record the model" in out                    # exported from memory: no ref


def test_bench_times_the_onnx_runtime_next_to_eager(mar_model_dir, mar_bundle):
    from driftar_core.bench import run_bench, to_markdown
    ort_spec = f"onnx:{mar_bundle}"
    report = run_bench([str(mar_model_dir), ort_spec], batch_sizes=(1, 2), repeats=1, warmup=1, quality=False,
                       progress=False)
    eager, ort = report["results"]
    assert ort["model"] == ort_spec
    for key in ("backbone_passes", "head_nfe", "draft_passes", "nfe"):
        assert ort[key] == eager[key]                                          # the same loop, counted alike
    assert ort["latency_ms_b1"] > 0 and report["ratios"][ort_spec]["speedup_b2"] > 0
    assert ort["ar_ms_b1"] > 0 and ort["decoder_ms_b1"] > 0                    # stages timed inside the loop
    assert f"`{ort_spec}`" in to_markdown(report)
