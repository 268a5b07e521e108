"""The training loop end to end on the fake bundle: it learns, and it writes the run directory contract."""
from __future__ import annotations

import csv
import json

import torch
from PIL import Image

from driftar_core.bundle import load_safetensors
from driftar_core.config import RunConfig
from driftar_core.data.digits import DigitsDataset
from driftar_core.train import train
from driftar_core.train.objective import BaselineObjective
from driftar_core.train.rundir import BASE_COLUMNS
from driftar_core.train.trainer import build_bundle


def _fixed_batch_loss(bundle) -> float:
    ds = DigitsDataset("test")
    objective = BaselineObjective(bundle).eval()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(123)                                  # same masks before and after
        loss, _ = objective(ds.images[:128], ds.labels[:128])
    return loss.item()


def test_training_lowers_the_loss(make_config, fake_bundle):
    before = _fixed_batch_loss(fake_bundle)
    train(make_config(steps=40, sample_every=0, ckpt_every=0, log_every=10), bundle=fake_bundle,
          progress=False)
    after = _fixed_batch_loss(fake_bundle)                      # the bundle trains in place (live weights)
    assert after < 0.8 * before, (before, after)


def test_run_directory_contents(tmp_path, make_config, fake_plugin, capsys):
    cfg = make_config(steps=8, log_every=2, sample_every=4, ckpt_every=4)
    run = train(cfg, progress=False)                            # bundle from the registry (fake_tiny)

    assert run.parent == tmp_path / "fake" and run.name.endswith("-t")
    assert run.name[:15].replace("-", "").isdigit()             # YYYYmmdd-HHMMSS

    # config.json: the resolved RunConfig, re-loadable, with the full model config in model.args
    saved = json.loads((run / "config.json").read_text())
    assert RunConfig.model_validate(saved).train.steps == 8
    assert saved["model"]["args"]["width"] == 32 and saved["model"]["args"]["sampling"]["num_iter"] == 4

    # metrics.csv: base columns first, then the objective's metrics; one row per log_every steps
    with open(run / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames[:5]) == BASE_COLUMNS and "head_loss" in reader.fieldnames
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    assert all(float(r["loss"]) > 0 and float(r["it/s"]) > 0 for r in rows)
    assert [float(r["lr"]) for r in rows] == [cfg.optim.lr / 2] + [cfg.optim.lr] * 3  # 4-step warmup, constant

    env = json.loads((run / "env.json").read_text())
    for key in ("python", "torch", "numpy", "platform", "device", "git_sha", "world_size", "plugins"):
        assert key in env
    assert env["world_size"] == 1 and env["device"] == "cpu"

    # sample grids: 3 class rows x 3 columns of 16x16 digits, 1-px gaps, upscaled x4
    for step in (4, 8):
        img = Image.open(run / "samples" / f"step-{step:07d}.png")
        assert img.size == ((3 * 17 - 1) * 4, (3 * 17 - 1) * 4)

    ckpts = run / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step-0000008"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step-0000004", "step-0000008"]  # no temp dirs
    for name in ("model.safetensors", "config.json", "README.md", "raw.safetensors", "state.safetensors",
                 "state.json"):
        assert (ckpts / "step-0000008" / name).is_file()
    assert not list(ckpts.rglob("*.pt")) and not list(ckpts.rglob("*.pth"))   # no pickles
    assert sorted(p.name for p in (run / "model").iterdir()) == ["README.md", "config.json", "model.safetensors"]

    out = capsys.readouterr().out                               # plain log lines when progress=False
    assert "step 8/8 loss" in out


def test_progress_bar_mode_and_init_from(tmp_path, make_config, fake_plugin, capsys):
    first = train(make_config(steps=3, log_every=1, sample_every=0, ckpt_every=0), progress=True)
    err = capsys.readouterr().err
    assert "train" in err and "3/3" in err                       # tqdm bar on stderr instead of log lines
    assert (first / "metrics.csv").read_text().count("\n") == 4  # the CSV is written either way

    # model.init_from: a new run starts from the first run's EMA bundle (train.steps >= 1 is validated)
    cfg = make_config(steps=1, sample_every=0, ckpt_every=0)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"init_from": str(first)})})
    a, b = load_safetensors(first / "model" / "model.safetensors"), build_bundle(cfg).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert train(cfg, progress=False) != first
