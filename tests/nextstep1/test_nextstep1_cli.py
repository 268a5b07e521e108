"""The Drift-AR NextStep-1 as users meet it: `driftar sample` and `driftar bench` decode speculatively by
default, `--no-speculative` / `@plain` decode sequentially, and misuse fails with a clear message."""
from __future__ import annotations

import pytest

from driftar_core.bench import run_bench, split_model_spec
from cli_runner import run_cli as run  # tests/cli_runner.py
from driftar_core.method.objective import prepare_drift

DRIFT = dict(head_type="drift", drift_ar=dict(decoder=dict(width=32, depth=2), draft=dict(kind="layer", depth=1)))




@pytest.fixture
def saved(make_bundle, tmp_path):
    """{"drift": a saved tiny Drift-AR NextStep-1 (phi and draft copied), "flow": a saved flow-head one}."""
    drift = make_bundle(seed=0, **DRIFT)
    prepare_drift(drift)
    drift.arch = "nextstep1_tiny_drift"
    flow = make_bundle(seed=0)
    flow.arch = "nextstep1_tiny"
    return {"drift": str(drift.save(tmp_path / "drift")), "flow": str(flow.save(tmp_path / "flow"))}


def test_sample_is_speculative_by_default_and_plain_on_request(saved, tmp_path, capsys):
    code, out, _ = run(["sample", "-c", saved["drift"], "-n", "2", "--batch-size", "1", "--out",
                        str(tmp_path / "a.png")], capsys)
    assert code == 0 and "speculative decoding: acceptance" in out     # batch 1: speculative by default
    code, out, _ = run(["sample", "-c", saved["drift"], "-n", "2", "--out", str(tmp_path / "a2.png")], capsys)
    assert code == 0 and "draft passes 0" in out                        # batch 2 > speculative.max_batch
    code, out, _ = run(["sample", "-c", saved["drift"], "-n", "2", "--no-speculative", "--out",
                        str(tmp_path / "b.png")], capsys)
    assert code == 0 and "backbone passes 16, head NFE 16, draft passes 0" in out
    code, out, _ = run(["sample", "-c", saved["drift"], "-n", "2", "--draft-len", "2", "--tau0", "10",
                        "--out", str(tmp_path / "c.png")], capsys)
    assert code == 0 and "acceptance 1.000" in out           # a huge tolerance accepts every draft
    assert "backbone passes 6," in out                          # ceil(16 / (k + 1)) target passes


@pytest.mark.parametrize("argv,needle", [
    (["--no-speculative", "--kappa", "1"], "only apply to speculative decoding"),
])
def test_sample_rejects_contradictory_options(saved, tmp_path, capsys, argv, needle):
    code, _, err = run(["sample", "-c", saved["drift"], "--out", str(tmp_path / "x.png"), *argv], capsys)
    assert code == 2 and needle in err and not (tmp_path / "x.png").exists()


def test_speculative_needs_a_draft(saved, tmp_path, capsys):
    code, _, err = run(["sample", "-c", saved["flow"], "--speculative", "--out", str(tmp_path / "x.png")], capsys)
    assert code == 2 and "needs a model with a draft" in err


def test_bench_compares_speculative_and_plain_decoding_of_one_model(saved):
    assert split_model_spec("m.digits@plain") == ("m.digits", False)
    assert split_model_spec("runs/a@b") == ("runs/a@b", None)
    report = run_bench([saved["flow"], saved["drift"] + "@plain", saved["drift"]], batch_sizes=(1, 2), repeats=1,
                       warmup=0, quality=False, progress=False)
    flow, plain, spec = report["results"]
    assert (flow["backbone_passes"], flow["head_nfe"], flow["draft_passes"]) == (16, 16 * 3, 0)  # 3-step flow head
    assert (plain["backbone_passes"], plain["head_nfe"], plain["draft_passes"]) == (16, 16, 0)
    assert spec["acceptance_rate"] is not None and spec["draft_passes"] > 0
    assert spec["backbone_passes"] <= 16
    ratios = report["ratios"][spec["model"]]
    plain_ar = plain["ar_ms_b1"]                                       # the AR stage of the same model, sequential
    assert ratios["ar_stage_speedup_vs_plain"] == pytest.approx(plain_ar / spec["ar_ms_b1"])
    assert ratios["ar_stage_speedup"] == pytest.approx(flow["ar_ms_b1"] / spec["ar_ms_b1"])
    assert report["ratios"][plain["model"]]["ar_stage_speedup_vs_plain"] is None and "stage_product" not in ratios
    # without its plain twin in the list, the speculative model gets one added (and labelled)
    report = run_bench([saved["flow"], saved["drift"]], batch_sizes=(1,), repeats=1, warmup=0, quality=False,
                       progress=False)
    models = [r["model"] for r in report["results"]]
    assert models == [saved["flow"], saved["drift"], saved["drift"] + "@plain"] and report["results"][2]["added"]
    assert report["ratios"][saved["drift"]]["ar_stage_speedup_vs_plain"] is not None


def test_draft_recipe_distils_a_window_draft_and_keeps_everything_else(tmp_path, capsys):
    """`driftar train --recipe draft` from a trained Drift-AR model: rollouts, a few steps, a saved model
    whose non-draft weights are the source's and whose draft (only) changed."""
    import torch

    from driftar_core.resolve import load_model
    args = ["train", "--backbone", "nextstep1", "--recipe", "draft", "--set", "model.init_from=nextstep1_tiny_drift.digits",
            "--set", "model.args.drift_ar.draft.rollouts=6", "--set", "model.args.drift_ar.draft.rollout_batch=4",
            "--set", "model.args.drift_ar.draft.width=32", "--set", "model.args.drift_ar.draft.unroll=2",
            "--set", "method.batch=16", "--set", "train.steps=3", "--set", "train.log_every=1",
            "--set", "train.grid_per_class=1", "--set", f"train.runs_dir={tmp_path}"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert "draft rollouts: 6/6" in out and "tokens_per_round" in out
    run_dir = next((tmp_path / "nextstep1").iterdir())
    new, src = load_model(str(run_dir / "model")), load_model("nextstep1_tiny_drift.digits")
    assert type(new.draft).__name__ == "WindowDraft" and new.draft.config.width == 32
    theirs = src.state_dict()
    for key, value in new.state_dict().items():
        if not key.startswith("draft."):
            assert torch.equal(value, theirs[key]), key                # target, head, tokenizer untouched
    assert new.draft.out_proj.weight.abs().sum() > 0                   # zero-initialised, then trained


def test_draft_recipe_needs_a_trained_model():
    """The trainer refuses the draft recipe without model.init_from (the CLI trains the earlier stages first)."""
    from driftar_core.cli.train import resolve_configs
    from driftar_core.config import ConfigError
    from driftar_core.train.trainer import build_bundle
    cfg, _ = resolve_configs("nextstep1", "draft", None, ("train.steps=1",))
    with pytest.raises(ConfigError, match="starts from a trained drift model: set model.init_from"):
        build_bundle(cfg)
