"""The example third-party backbone (examples/tinycausal): discovered through its entry point when
installed, passes the conformance kit, and gets baseline training, the drift decoder, the draft and
speculative decoding from the documented contracts alone."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_runner import run_cli
from driftar_core.factory import create_model
from driftar_core.testing import BackboneConformance

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tinycausal"


@pytest.fixture(scope="module", autouse=True)
def tinycausal_plugin():
    """The example's plugin module registered on the default manager for this module's tests."""
    from driftar_core.plugins import get_plugin_manager
    sys.path.insert(0, str(EXAMPLE))
    import driftar_tinycausal.plugin as plugin
    pm = get_plugin_manager()
    registered = pm.get_plugin("tinycausal") is None                 # not already installed as a distribution
    if registered:
        pm.register(plugin, name="tinycausal")
        pm.reset_registries()
    yield
    if registered:
        pm.unregister(name="tinycausal")
        pm.reset_registries()
    sys.path.remove(str(EXAMPLE))


class TestTinyCausal(BackboneConformance):
    @pytest.fixture(params=["tinycausal_tiny", "tinycausal_tiny_drift"])
    def bundle(self, request):
        torch.manual_seed(0)
        return create_model(request.param)


@pytest.mark.slow
def test_baseline_then_drift_then_speculative_sampling(tmp_path, capsys):
    code, _, err = run_cli(["train", "--backbone", "tinycausal", "--set", f"train.runs_dir={tmp_path}",
                            "--set", "train.steps=4", "--set", "data.batch_size=8", "--set", "train.grid_per_class=1",
                            "--set", "train.log_every=2"], capsys)
    assert code == 0, err
    base, drift = sorted((tmp_path / "tinycausal").iterdir(), key=lambda p: p.name)
    assert json.loads((drift / "config.json").read_text())["model"]["init_from"] == str(base)
    code, out, err = run_cli(["sample", "-c", str(drift), "-n", "2", "--batch-size", "1",
                              "--out", str(tmp_path / "g.png")], capsys)
    assert code == 0, err
    assert "speculative decoding: acceptance" in out and "head NFE" in out


def test_the_installed_distribution_is_discovered_through_its_entry_point(tmp_path):
    src = tmp_path / "src"                                          # pip builds in the source tree: a copy
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(tmp_path / "site"), str(src)], check=True, capture_output=True)
    code = "import sys; from driftar_core.cli import main; main(sys.argv[1:])"
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", code, "plugins", "--json"], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=120)
    assert res.returncode == 0, res.stderr
    info = {p["name"]: p for p in json.loads(res.stdout)}["tinycausal"]
    assert info["status"] == "loaded" and info["distribution"] == "driftar-tinycausal"
    assert info["contributed"]["backbones"] == ["tinycausal"] and "tinycausal/drift" in info["contributed"]["recipes"]


def test_no_library_module_names_the_example():
    for folder in ("driftar_core", "plugins", "export", "zoo"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "tinycausal" not in path.read_text(), f"{path} names the example backbone"


def test_the_example_exports_and_runs_its_own_loop_over_onnx(tmp_path, capsys):
    """Export from the plugin's declared graphs alone (nothing in driftar_export names it), then
    ``driftar run --compare``: the bound graphs drive its own loop, plain and speculative."""
    pytest.importorskip("onnxruntime")
    from driftar_export.manifest import read_manifest
    torch.manual_seed(0)
    model = create_model("tinycausal_tiny_drift").eval()
    model_dir = model.save(tmp_path / "model")
    out = tmp_path / "bundle"
    code, _, err = run_cli(["export", "--model", str(model_dir), "--target", "onnx", "--out", str(out),
                            "--set", "max_batch=2", "--threads", "1"], capsys)
    assert code == 0, err
    m = read_manifest(out)
    assert {r: g["binds"] for r, g in m["graphs"].items()} == {
        "target_rows": "backbone.forward_rows", "draft_rows": "draft.forward_rows", "decoder": "head.decode",
        "detokenize": "tokenizer.decode"}
    assert m["sampler"]["kind"] == "speculative" and m["parity"]["sampler"]["counts_equal"]
    for extra, speculative in (([], True), (["--sampler", "plain"], False)):
        code, text, err = run_cli(["run", "--bundle", str(out), "-n", "2", "--batch-size", "1", "--compare",
                                   "--out", str(tmp_path / "g.png"), *extra], capsys)
        assert code == 0, err
        assert ("acceptance" in text) == speculative
        diff = float(text.split("max |pixel difference| ")[1].split()[0])
        assert diff <= 1e-4, text
