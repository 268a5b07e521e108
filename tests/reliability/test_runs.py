"""Run directories: one writer at a time, --resume latest finds every run, resume keeps the run's config,
and sampling a run loads its newest complete state and says which step it is."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from cli_runner import run_cli
from driftar_core.files import LockedError, RunLock
from driftar_core.train import train
from driftar_core.train.checkpoint import resolve_resume


def test_a_second_writer_of_a_run_fails_naming_the_holder(tmp_path, make_config, fake_plugin, fake_bundle):
    run = train(make_config(steps=2, log_every=1, sample_every=0, ckpt_every=2), bundle=fake_bundle, progress=False)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d' % os.getpid())\n"
                               "print('locked', flush=True); time.sleep(60)", str(run / RunLock.NAME)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rows = (run / "metrics.csv").read_text()
        with pytest.raises(LockedError, match=f"PID {holder.pid}"):
            train(make_config(steps=4), bundle=fake_bundle, resume=str(run), progress=False)
        assert (run / "metrics.csv").read_text() == rows          # nothing duplicated or overwritten
    finally:
        holder.kill()
        holder.wait()
    train(make_config(steps=4, sample_every=0), bundle=fake_bundle, resume=str(run), progress=False)  # lock died


def test_the_lock_is_released_after_a_run_and_refused_while_held(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(LockedError, match=f"PID {os.getpid()}"):
            RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire().release()


def test_resume_latest_finds_same_second_runs(tmp_path):
    root = tmp_path / "mar"
    for name in ("20260101-000000-run", "20260101-000000-run-2", "20260101-000000-runner"):
        (root / name / "checkpoints" / "step-0000001").mkdir(parents=True)
        (root / name / "checkpoints" / "latest").write_text("step-0000001\n")
    assert resolve_resume("latest", tmp_path, "mar", "run").parent.parent.name == "20260101-000000-run-2"


def test_resume_keeps_the_runs_saved_overrides(tmp_path, capsys):
    common = ["train", "--backbone", "mar", "--recipe", "baseline", "--set", "train.threads=1",
              "--set", f"train.runs_dir={tmp_path / 'runs'}"]
    small = ["--set", "data.batch_size=8", "--set", "train.grid_per_class=0", "--set", "train.ckpt_every=1",
             "--set", "optim.lr=0.007", "--set", "model.args.encoder_depth=1"]
    code, out, err = run_cli([*common, *small, "--set", "train.steps=2"], capsys)
    assert code == 0, err
    run = next((tmp_path / "runs" / "mar").iterdir())
    code, out, err = run_cli([*common, "--resume", str(run), "--set", "train.steps=3"], capsys)
    assert code == 0, err
    assert "resume:" in out and "train.steps=3" in out and "steps 2 -> 3" in out
    resumed = json.loads((run / "config.resume-step-0000002.json").read_text())
    assert resumed["optim"]["lr"] == 0.007 and resumed["data"]["batch_size"] == 8    # not repeated on resume
    assert resumed["model"]["args"]["encoder_depth"] == 1 and resumed["train"]["steps"] == 3


def test_sampling_a_run_loads_its_newest_state_and_says_which(tmp_path, capsys, make_config, fake_plugin,
                                                              fake_bundle):
    run = train(make_config(steps=2, log_every=1, sample_every=0, ckpt_every=1), bundle=fake_bundle,
                progress=False)
    code, _, err = run_cli(["sample", "-c", str(run), "-n", "2", "--out", str(tmp_path / "a.png")], capsys)
    assert code == 0 and "model (step 2)" in err
    time.sleep(0.01)
    # resumed past its end and killed: checkpoints/latest (step 3) is newer than model/ (step 2)
    from driftar_core.train.checkpoint import save_checkpoint
    save_checkpoint(run / "checkpoints", 3, ema_bundle=fake_bundle, raw_weights=fake_bundle.state_dict(),
                    train_state={"step": 3})
    code, _, err = run_cli(["sample", "-c", str(run), "-n", "2", "--out", str(tmp_path / "b.png")], capsys)
    assert code == 0 and "step-0000003" in err and "newer than model/ (step 2)" in err
