"""Crash leftovers: a kill mid-checkpoint leaves a temporary that the next start removes, resume from the
last complete checkpoint is still bitwise equal to an uninterrupted run, and retention bounds the disk."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from driftar_core.bundle import load_safetensors
from driftar_core.files import clean_stale_temps
from driftar_core.train import train

HERE = Path(__file__).resolve().parent
STEPS, KILL_AT, EVERY = 9, 6, 3


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _cfg(make_config, runs: Path, steps: int):
    c = make_config(runs, steps=steps, log_every=3, sample_every=5, ckpt_every=EVERY)
    return c.model_copy(update={"data": c.data.model_copy(update={"dataset": "fake_images"})})


def _fresh(fake_factory):
    torch.manual_seed(0)
    return fake_factory()


def test_kill_during_a_checkpoint_write_then_resume_equals_an_uninterrupted_run(tmp_path, make_config,
                                                                                  fake_plugin, fake_factory):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(HERE / "kill_worker.py"), str(tmp_path / "b"), str(STEPS),
                           str(KILL_AT), str(EVERY)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr                 # it really died by SIGKILL
    run = next((tmp_path / "b" / "fake").iterdir())
    ckpts = run / "checkpoints"
    leftovers = [p.name for p in ckpts.iterdir() if ".tmp-" in p.name]
    assert leftovers and leftovers[0].startswith(f".step-{KILL_AT:07d}.tmp-")   # the half-written checkpoint
    assert (ckpts / "latest").read_text().strip() == f"step-{KILL_AT - EVERY:07d}"

    resumed = train(_cfg(make_config, tmp_path / "b", STEPS), bundle=_fresh(fake_factory), resume="latest",
                    progress=False)
    assert resumed == run
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]   # cleaned on the next start
    straight = train(_cfg(make_config, tmp_path / "a", STEPS), bundle=_fresh(fake_factory), progress=False)
    for fname in ("raw.safetensors", "model.safetensors", "state.safetensors"):
        a = load_safetensors(straight / "checkpoints" / f"step-{STEPS:07d}" / fname)
        b = load_safetensors(resumed / "checkpoints" / f"step-{STEPS:07d}" / fname)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), fname


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / f".step-0000004.tmp-{dead_pid()}-abc"
    live = tmp_path / f".step-0000004.tmp-{os.getppid()}-xyz"        # our parent is alive
    old_file = tmp_path / f".metrics.csv.tmp-{dead_pid()}-q1"
    mine = tmp_path / ".keep.tmp-notapid"                             # not a driftar temporary name
    for d in (dead, live):
        d.mkdir()
        (d / "raw.safetensors").write_bytes(b"x" * 10)
    old_file.write_text("partial")
    mine.write_text("user file")
    removed = clean_stale_temps(tmp_path)
    assert sorted(removed) == sorted([dead, old_file])
    assert live.is_dir() and mine.is_file() and not dead.exists() and not old_file.exists()


def test_checkpoint_retention_keeps_the_newest_and_the_final(tmp_path, make_config, fake_plugin, fake_bundle):
    cfg = make_config(steps=10, log_every=5, sample_every=0, ckpt_every=1)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"keep_checkpoints": 2})})
    run = train(cfg, bundle=fake_bundle, progress=False)
    steps = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert steps == ["step-0000009", "step-0000010"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-0000010"
