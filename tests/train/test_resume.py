"""Resume: N steps + save + resume N more == 2N steps bitwise; bad checkpoints fail cleanly."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch

from driftar_core.bundle import CheckpointError, load_safetensors
from driftar_core.train import train

N = 7   # batch 256 on ~1.4k digits = 5 steps per epoch: the resume lands mid-epoch, 2N crosses two epochs


def _tensors(step_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_safetensors(step_dir / name)
            for name in ("raw.safetensors", "model.safetensors", "state.safetensors")}


def _metrics(run: Path) -> dict[int, dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return {int(r["step"]): r for r in csv.DictReader(f)}


def test_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path, make_config, fake_plugin):
    # sample_every / log_every do not divide N: sampling and logging must not touch the training RNG
    common = dict(log_every=3, sample_every=5, ckpt_every=N)

    def cfg(runs: str, steps: int):
        c = make_config(tmp_path / runs, steps=steps, **common)
        return c.model_copy(update={"data": c.data.model_copy(update={"batch_size": 256})})

    straight = train(cfg("a", 2 * N), progress=False)
    first = train(cfg("b", N), progress=False)
    resumed = train(cfg("b", 2 * N), resume="latest", progress=False)
    assert resumed == first                                   # continues in the same run directory

    a = _tensors(straight / "checkpoints" / f"step-{2 * N:07d}")
    b = _tensors(resumed / "checkpoints" / f"step-{2 * N:07d}")
    for fname in a:                          # live weights, EMA weights, Adam moments and RNG states
        assert a[fname].keys() == b[fname].keys(), fname
        for key in a[fname]:
            assert torch.equal(a[fname][key], b[fname][key]), f"{fname}:{key} differs after resume"
    sa = json.loads((straight / "checkpoints" / f"step-{2 * N:07d}" / "state.json").read_text())["state"]
    sb = json.loads((resumed / "checkpoints" / f"step-{2 * N:07d}" / "state.json").read_text())["state"]
    assert sa == sb                          # scheduler, optimizer groups, python/numpy RNG

    # metrics rows average the steps since the previous row: the run that stopped at N has an extra
    # row at N, and the first row after the resume (9) averages fewer steps; all others match
    ma, mb = _metrics(straight), _metrics(resumed)
    assert sorted(mb) == sorted([*ma, N])
    for s in (3, 6, 12, 14):
        assert ma[s]["loss"] == mb[s]["loss"]
    # the config changed (train.steps): recorded beside config.json, never over it
    assert json.loads((first / "config.json").read_text())["train"]["steps"] == N
    assert json.loads((first / f"config.resume-step-{N:07d}.json").read_text())["train"]["steps"] == 2 * N


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - 5] ^= 0xFF                                # same size, different content
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "flipped weights": (lambda d: _flip_byte(d / "raw.safetensors"), "raw.safetensors is corrupt"),
    "truncated state": (lambda d: (d / "state.safetensors").write_bytes((d / "state.safetensors").read_bytes()[:100]),
                        "state.safetensors is corrupt"),
    "missing EMA weights": (lambda d: (d / "model.safetensors").unlink(), "model.safetensors is missing"),
    "missing state.json": (lambda d: (d / "state.json").unlink(), "state.json is missing"),
    "garbage state.json": (lambda d: (d / "state.json").write_text("{not json"), "state.json is corrupt"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_checkpoint_fails_clearly_and_writes_nothing(tmp_path, make_config, fake_bundle, kind):
    run = train(make_config(steps=2, log_every=1, sample_every=0, ckpt_every=2), bundle=fake_bundle, progress=False)
    step_dir = run / "checkpoints" / "step-0000002"
    corrupt, message = CORRUPTIONS[kind]
    corrupt(step_dir)
    os.utime(step_dir, None)
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=message):
        train(make_config(steps=4), bundle=fake_bundle, resume=str(run), progress=False)
    assert _snapshot(tmp_path) == before                       # nothing written, nothing overwritten


def test_missing_or_unknown_resume_targets(tmp_path, make_config, fake_bundle):
    with pytest.raises(CheckpointError, match="no run named"):
        train(make_config(steps=2), bundle=fake_bundle, resume="latest")
    with pytest.raises(CheckpointError, match="no such file"):
        train(make_config(steps=2), bundle=fake_bundle, resume=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a run directory"):
        train(make_config(steps=2), bundle=fake_bundle, resume=str(tmp_path / "empty"))
    ckpts = tmp_path / "fake" / "20260101-000000-t" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "latest").write_text("step-0000009\n")
    with pytest.raises(CheckpointError, match="points at 'step-0000009'"):
        train(make_config(steps=2), bundle=fake_bundle, resume="latest")
    assert not list(tmp_path.rglob("*.json"))                 # no run directory was created


def test_resume_into_a_different_model_fails_before_writing(tmp_path, make_config, fake_bundle, fake_factory):
    run = train(make_config(steps=2, log_every=1, sample_every=0, ckpt_every=2), bundle=fake_bundle, progress=False)
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="does not match the model"):
        train(make_config(steps=4), bundle=fake_factory(width=16), resume=str(run), progress=False)
    assert _snapshot(tmp_path) == before
