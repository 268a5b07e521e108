"""What cannot be exported or run fails before any work, names the problem and the fix, and loses nothing."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from cli_runner import run_cli as run_stdio  # tests/cli_runner.py
from driftar_export.options import ExportError, OnnxOptions


def run_cli(argv, capsys):
    """(exit code, stdout + stderr)"""
    code, out, err = run_stdio(argv, capsys)
    return code, out + err


def test_baseline_head_is_refused(tmp_path):
    from driftar_export.exporter import export_onnx
    from driftar_mar.build import build_mar
    from driftar_mar.config import MARConfig
    baseline = build_mar(MARConfig(encoder_embed_dim=32, decoder_embed_dim=32, encoder_num_heads=2,
                                   decoder_num_heads=2, diffloss=dict(depth=1, width=16)))
    with pytest.raises(ExportError, match="DiffLoss.*DriftDecoder"):
        export_onnx(baseline, tmp_path / "out", OnnxOptions())
    assert not (tmp_path / "out").exists()


def test_unknown_and_bad_options_fail_before_the_model_loads(capsys, tmp_path):
    code, out = run_cli(["export", "--model", "no_such_model", "--target", "onnx", "--out", str(tmp_path / "o"),
                         "--set", "max_bach=4"], capsys)
    assert code != 0 and "max_bach" in out and "max_batch" in out            # names the key and the valid ones
    code, out = run_cli(["export", "--model", "no_such_model", "--target", "onnx", "--out", str(tmp_path / "o"),
                         "--set", "precision=int8"], capsys)
    assert code != 0 and "precision" in out and "fp32" in out
    code, out = run_cli(["export", "--model", "x", "--target", "onnxx", "--out", str(tmp_path / "o")], capsys)
    assert code != 0 and "did you mean: onnx" in out and "driftar-export" in out
    assert not (tmp_path / "o").exists()


def test_tensorrt_target_without_tensorrt_fails_fast_with_what_to_install(capsys, tmp_path):
    try:
        import tensorrt  # noqa: F401
        if torch.cuda.is_available():
            pytest.skip("tensorrt and a GPU are present: the fail-fast path does not apply")
    except ImportError:
        pass
    code, out = run_cli(["export", "--model", "no_such_model", "--target", "tensorrt", "--out", str(tmp_path / "o")],
                        capsys)
    assert code != 0 and "pip install tensorrt" in out and "--target onnx" in out
    assert "no_such_model" not in out and not (tmp_path / "o").exists()       # refused before loading the model


def test_out_dir_that_is_not_a_bundle_is_refused(tiny_mar, tmp_path):
    from driftar_export.exporter import export_onnx
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an export bundle"):
        export_onnx(tiny_mar, tmp_path / "precious", OnnxOptions())
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_failed_parity_keeps_the_previous_bundle(tiny_mar, mar_bundle, tmp_path, monkeypatch):
    """An export that fails its parity check (an impossible tolerance) leaves the old bundle untouched."""
    from driftar_export import exporter
    from driftar_export.exporter import export_onnx
    from driftar_export.graphs.common import decoder_spec
    monkeypatch.setattr(exporter, "graph_specs", lambda bundle, options, settings: (   # one small graph suffices
        [decoder_spec(bundle, 8)], {"max_draft_len": None}))
    old = tmp_path / "bundle"
    shutil.copytree(mar_bundle, old)
    before = (old / "manifest.json").read_text()
    with pytest.raises(ExportError, match="not faithful"):
        export_onnx(tiny_mar, old, OnnxOptions(max_batch=4, parity_atol=1e-12), log=lambda s: None)
    assert (old / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]             # no temporary left behind


def test_runner_bounds_and_incomplete_bundles(mar_bundle, causal_runner, tmp_path):
    from driftar_export.manifest import BundleError
    from driftar_export.runtime.runner import Runner
    noise = torch.zeros(5, 16, 1, 4)
    assert causal_runner.sample(torch.arange(5), noise=noise).counts.extra["chunks"] == 2   # above max_batch 4
    with pytest.raises(ValueError, match="max_draft_len=9"):
        causal_runner.sample(torch.arange(2), noise=noise[:2], draft_len=9)
    with pytest.raises(ValueError, match="num_iter"):
        causal_runner.sample(torch.arange(2), noise=noise[:2], sampler="plain", num_iter=4)
    with pytest.raises(ValueError, match="class labels must be in"):
        causal_runner.sample(torch.tensor([0, 10]))
    broken = tmp_path / "broken"
    shutil.copytree(mar_bundle, broken)
    (broken / "graphs" / "decoder.onnx").unlink()
    with pytest.raises(BundleError, match="decoder.onnx"):
        Runner(broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "format": "driftar-export/0"}))
    with pytest.raises(BundleError, match="re-export"):
        Runner(broken)
    with pytest.raises(BundleError, match="manifest.json is missing"):
        Runner(tmp_path)


def test_unavailable_provider_says_what_to_install(mar_bundle):
    import onnxruntime as ort

    from driftar_export.runtime.runner import Runner
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the TensorRT execution provider")
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        Runner(mar_bundle, providers=("tensorrt", "cpu"))
