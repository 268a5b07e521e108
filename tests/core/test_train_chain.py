"""The whole multi-stage ``driftar train`` of every built-in backbone, shortened by one ``--set``: the
overrides reach every stage (baseline, drift, draft), ``STAGE:KEY=VALUE`` one stage only."""
from __future__ import annotations

import json

import pytest

from cli_runner import run_cli
from driftar_core.cli.train import stage_overrides

SMALL = ["--set", "train.steps=3", "--set", "data.batch_size=8", "--set", "train.grid_per_class=1",
         "--set", "train.threads=1", "--set", "train.log_every=1"]
DISTIL = {"nextstep1": ["--set", "model.args.drift_ar.draft.rollouts=16", "--set", "model.args.drift_ar.draft.rollout_batch=8"]}


def test_stage_overrides_reach_every_stage_but_stage_own_keys():
    items = ("train.steps=3", "model.arch=mar_tiny_drift", "method.phase1_frac=0.5", "baseline:optim.lr=0.1",
             "draft:train.steps=7")
    assert stage_overrides(items, "baseline", "drift") == ("train.steps=3", "optim.lr=0.1")
    assert stage_overrides(items, "drift", "drift") == ("train.steps=3", "model.arch=mar_tiny_drift",
                                                        "method.phase1_frac=0.5")
    assert stage_overrides(items, "draft", "drift") == ("train.steps=3", "train.steps=7")


@pytest.mark.slow
@pytest.mark.parametrize("backbone, stages", [("mar", ("baseline", "drift")),
                                              ("nextstep1", ("baseline", "drift", "draft"))])
def test_the_full_chain_runs_in_seconds_with_one_set(backbone, stages, tmp_path, capsys):
    code, out, err = run_cli(["train", "--backbone", backbone, "--set", f"train.runs_dir={tmp_path}", *SMALL,
                              *DISTIL.get(backbone, []), "--set", "baseline:optim.lr=0.002"], capsys)
    assert code == 0, err
    found = {r: json.loads((r / "config.json").read_text()) for r in (tmp_path / backbone).iterdir()}
    assert len(found) == len(stages)
    runs, prev = [], None                                    # the chain's order: each run starts from the last
    for _ in stages:                                         # (run names can tie within a second)
        runs.append(next(r for r, c in found.items() if c["model"]["init_from"] == (None if prev is None else str(prev))))
        prev = runs[-1]
    configs = [found[r] for r in runs]
    assert [c["recipe"] for c in configs] == list(stages)
    assert all(c["train"]["steps"] == 3 and c["data"]["batch_size"] == 8 for c in configs)
    assert configs[0]["optim"]["lr"] == 0.002 and configs[1]["optim"]["lr"] != 0.002     # baseline: only
    for prev, cfg in zip(runs, configs[1:]):
        assert cfg["model"]["init_from"] == str(prev)                                    # each from the last
    assert all((r / "model" / "model.safetensors").is_file() for r in runs)
    code, _, err = run_cli(["sample", "-c", str(runs[-1]), "-n", "2", "--batch-size", "1",
                            "--out", str(tmp_path / "g.png")], capsys)
    assert code == 0 and "step 3" in err
