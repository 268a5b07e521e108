"""The command line as a user meets it: config errors before any work, sample outputs, ImageFolder data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cli_runner import run_cli as run  # tests/cli_runner.py




def test_print_config_shows_resolved_run_and_model(capsys):
    code, out, _ = run(["train", "--backbone", "mar", "--recipe", "baseline", "--set", "train.steps=5",
                        "--set", "model.args.buffer_size=8", "--print-config"], capsys)
    assert code == 0
    cfg = json.loads(out)
    assert cfg["run"]["train"]["steps"] == 5 and cfg["model"]["buffer_size"] == 8
    assert cfg["model"]["diffloss"]["num_sampling_steps"] == 100      # defaults come from the config model


@pytest.mark.parametrize("argv, needle", [
    (["--set", "optim.lrr=1"], "optim.lrr"),
    (["--set", "model.args.encoder_dept=3"], "model.encoder_dept"),
    (["--set", "train.device=tpu"], "train.device"),
    (["--set", "data.dataset=digit"], "did you mean: digits"),
])
def test_bad_config_fails_before_any_work(argv, needle, capsys, tmp_path):
    code, out, err = run(["train", "--backbone", "mar", "--recipe", "baseline",
                          "--set", f"train.runs_dir={tmp_path}", *argv], capsys)
    assert code == 2 and needle in err
    assert not any(tmp_path.iterdir())                                   # nothing was written


def test_bench_rejects_a_negative_burn_in_before_loading_anything(capsys):
    code, _, err = run(["bench", "-m", "no_such_model", "--burn-in", "-1"], capsys)
    assert code != 0 and "--burn-in" in err and ">= 0" in err


def test_unknown_backbone_suggests(capsys):
    code, _, err = run(["train", "--backbone", "marr"], capsys)
    assert code == 2 and "did you mean: mar" in err


@pytest.fixture
def saved_model(tmp_path):
    from driftar_mar.build import build_mar
    from driftar_mar.config import MARConfig
    torch.manual_seed(0)
    b = build_mar(MARConfig(encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2, decoder_embed_dim=32,
                            decoder_depth=2, decoder_num_heads=2, buffer_size=2,
                            diffloss=dict(depth=1, width=16, num_sampling_steps=5), sampling=dict(num_iter=4)))
    b.arch = "mar_tiny"
    return b.save(tmp_path / "model")


def test_sample_npz_per_class(saved_model, tmp_path, capsys):
    out = tmp_path / "s.npz"
    code, stdout, err = run(["sample", "-c", str(saved_model), "--per-class", "2", "--out", str(out)], capsys)
    assert code == 0, err
    data = np.load(out)
    assert data["images"].dtype == np.uint8 and data["images"].shape == (20, 16, 16)
    assert data["labels"].tolist() == [c for c in range(10) for _ in range(2)]
    assert "head NFE 20" in stdout                                       # 4 AR steps x 5-step head


def test_sample_png_for_one_class_and_bad_inputs(saved_model, tmp_path, capsys):
    code, _, _ = run(["sample", "-c", str(saved_model), "-n", "4", "--class", "3", "--out", str(tmp_path / "g.png")], capsys)
    assert code == 0 and (tmp_path / "g.png").stat().st_size > 100
    code, _, err = run(["sample", "-c", str(saved_model), "--class", "12", "--out", str(tmp_path / "x.png")], capsys)
    assert code == 2 and "0..9" in err
    code, _, err = run(["sample", "-c", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")], capsys)
    assert code == 2 and "nope" in err


def test_imagefolder_dataset(tmp_path):
    from PIL import Image

    from driftar_core.plugins import registries
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray((np.random.rand(20, 24) * 255).astype(np.uint8)).save(tmp_path / cls / f"{i}.png")
    ds = registries().datasets.get("imagefolder")(split="train", image_size=16, root=str(tmp_path))
    assert len(ds) == 4 and ds.num_classes == 2
    x, y = ds[3]
    assert x.shape == (1, 16, 16) and -1 <= x.min() and x.max() <= 1 and y == 1
    with pytest.raises(ValueError, match="data.root"):
        registries().datasets.get("imagefolder")(split="train", image_size=16, root=None)


@pytest.fixture
def recorded_training(monkeypatch, tmp_path):
    """Replace the trainer: each call records (recipe, arch, init_from, seed, threads) and returns a run dir."""
    import driftar_core.train as train_pkg
    calls = []

    def fake_train(cfg, resume=None):
        calls.append((cfg.recipe, cfg.model.arch, cfg.model.init_from, cfg.train.seed, cfg.train.threads))
        return tmp_path / f"run-{len(calls)}"

    monkeypatch.setattr(train_pkg, "train", fake_train)
    return calls


def test_default_mar_job_trains_the_baseline_then_drift_from_it(recorded_training, tmp_path, capsys):
    """`driftar train --backbone mar` = baseline recipe, then the drift recipe with init_from = that run."""
    calls = recorded_training
    code, out, err = run(["train", "--backbone", "mar", "--set", "train.seed=7", "--set", "method.max_tokens=64"], capsys)
    assert code == 0, err
    assert [c[:4] for c in calls] == [("baseline", "mar_tiny", None, 7),
                                      ("drift", "mar_tiny_drift", str(tmp_path / "run-1"), 7)]
    calls.clear()
    code, _, err = run(["train", "--backbone", "mar", "--set", "model.init_from=mar_tiny.digits"], capsys)
    assert code == 0, err
    assert [c[:4] for c in calls] == [("drift", "mar_tiny_drift", "mar_tiny.digits", 0)]  # reuse: no baseline run


def test_default_nextstep1_job_trains_the_baseline_then_drift_then_its_draft(recorded_training, tmp_path, capsys):
    """`driftar train --backbone nextstep1` runs the same two stages with NextStep-1's recipes, then
    distils the window draft from the Drift-AR run (recipe "draft", init_from = that run)."""
    code, out, err = run(["train", "--backbone", "nextstep1", "--set", "train.seed=3"], capsys)
    assert code == 0, err
    assert [(r, a, i, s, t) for r, a, i, s, t in recorded_training] == [
        ("baseline", "nextstep1_tiny", None, 3, 1), ("drift", "nextstep1_tiny_drift", str(tmp_path / "run-1"), 3, 1),
        ("draft", "nextstep1_tiny_drift", str(tmp_path / "run-2"), 3, 2)]
    assert "[3/3] draft from" in out
    recorded_training.clear()
    code, _, err = run(["train", "--backbone", "nextstep1", "--set", "model.args.drift_ar.draft.kind=layer"], capsys)
    assert code == 0, err   # a layer draft trains with the drift head: two stages
    assert [c[0] for c in recorded_training] == ["baseline", "drift"]
