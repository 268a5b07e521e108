"""Bad values are refused at the boundary, before any work, with an error that names the option: no
tracebacks, and no silently wrong result with exit code 0 (NaN guidance, negative temperature, lr...)."""
from __future__ import annotations

import pytest

from cli_runner import run_cli

MODEL = ["-c", "mar_tiny_drift.digits"]


@pytest.mark.parametrize("argv, needle", [
    (["-n", "0"], "'-n'"), (["-n", "-5"], "'-n'"),
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "-1"], "--batch-size"),
    (["--per-class", "-2"], "--per-class"),
    (["--num-iter", "0"], "--num-iter"), (["--num-iter", "99"], "num_iter must be in [1, 64]"),
    (["--cfg", "nan"], "not a finite number"), (["--cfg", "inf"], "not a finite number"),
    (["--cfg", "-5"], "must be >= 0"), (["--temperature", "-1"], "must be > 0"),
    (["--temperature", "0"], "must be > 0"), (["--seed", "-1"], "--seed"),
    (["--kappa", "-1"], "--kappa"), (["--draft-len", "0"], "--draft-len"),
    (["--speculative"], "cannot decode speculatively"),
    (["--class", "99"], "classes must be in 0..9"),
])
def test_bad_sampling_values_are_clear_errors(argv, needle, tmp_path, capsys, monkeypatch):
    import driftar_core.sampling as sampling
    monkeypatch.setattr(sampling, "generate", _never)             # nothing may be sampled
    code, _, err = run_cli(["sample", *MODEL, "-n", "2", "--out", str(tmp_path / "g.png"), *argv], capsys)
    assert code == 2 and needle in err and "Traceback" not in err
    assert not (tmp_path / "g.png").exists()


def _never(*args, **kwargs):
    raise AssertionError("sampled despite a bad value")


def test_an_evaluator_is_not_a_generator(tmp_path, capsys):
    code, _, err = run_cli(["sample", "-c", "digits_evaluator.digits", "-n", "1", "--out", str(tmp_path / "g.png")],
                           capsys)
    assert code == 2 and "not an image generator" in err


@pytest.mark.parametrize("override, needle", [
    ("data.batch_size=0", "data.batch_size"), ("optim.lr=-1", "optim.lr"), ("optim.lr=nan", "finite"),
    ("optim.lr=NaN", "finite"), ("optim.lr=inf", "finite"), ("train.steps=0", "train.steps"),
    ("optim.betas=[1.5,0.9]", "optim.betas"), ("optim.ema_decay=2", "optim.ema_decay"),
    ("train.log_every=0", "train.log_every"), ("train.threads=0", "train.threads"),
    ("train.name=../../etc", "train.name"), ("optim.lr=1e-3.x", "optim.lr"),
    ("optim=3", "optim"), ("model.args.sampling.cfg=nan", "finite"),
])
def test_bad_config_values_fail_before_any_work(override, needle, tmp_path, capsys):
    code, _, err = run_cli(["train", "--backbone", "mar", "--recipe", "baseline",
                            "--set", f"train.runs_dir={tmp_path / 'runs'}", "--set", override], capsys)
    assert code == 2 and needle in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name, text, needle", [
    ("bad.json", "{oops", "is not valid JSON"), ("list.json", "[1]", "must hold a JSON object"),
    ("run.yaml", "optim:\n  lr: 1\n", "use a .toml or .json file"), ("bad.toml", "[optim\n", "is not valid TOML"),
])
def test_bad_config_files_are_clear_errors(name, text, needle, tmp_path, capsys):
    (tmp_path / name).write_text(text)
    code, _, err = run_cli(["train", "--backbone", "mar", "--config", str(tmp_path / name),
                            "--set", f"train.runs_dir={tmp_path / 'runs'}"], capsys)
    assert code == 2 and needle in err and "Traceback" not in err


def test_conflicting_overrides_are_a_clear_error(tmp_path, capsys):
    code, _, err = run_cli(["train", "--set", "optim=1", "--set", "optim.lr=2"], capsys)
    assert code == 2 and "conflicts" in err


@pytest.mark.parametrize("argv, needle", [
    (["eval", "-m", "mar_tiny_drift.digits", "--seeds", "0"], "--seeds"),
    (["eval", "-m", "mar_tiny_drift.digits", "--num-samples", "-3"], "--num-samples"),
    (["bench", "-m", "mar_tiny_drift.digits", "--repeats", "0"], "--repeats"),
    (["bench", "-m", "mar_tiny_drift.digits", "--burn-in", "nan"], "--burn-in"),
    (["bench", "-m", "mar_tiny_drift.digits", "--eval-seeds", "0"], "--eval-seeds"),
])
def test_bad_counts_of_eval_and_bench_are_usage_errors(argv, needle, capsys):
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and needle in err and "Traceback" not in err


@pytest.mark.parametrize("argv, needle", [
    (["--set", "train.grid_classes=[99]"], "train.grid_classes [99]"),
    (["--set", "data.dataset=imagefolder"], "needs data.root"),
    (["--set", "model.args.encoder_depth=0"], "encoder_depth"),
])
def test_train_settings_that_would_fail_late_fail_early(argv, needle, tmp_path, capsys):
    code, _, err = run_cli(["train", "--backbone", "mar", "--recipe", "baseline", "--set", "train.steps=1",
                            "--set", f"train.runs_dir={tmp_path / 'runs'}", *argv], capsys)
    assert code == 2 and needle in err and "Traceback" not in err


def test_a_bad_config_file_value_is_not_hidden_by_a_set(tmp_path, capsys):
    (tmp_path / "c.json").write_text('{"train": 5}')
    code, _, err = run_cli(["train", "--config", str(tmp_path / "c.json"), "--set", "train.steps=1"], capsys)
    assert code == 2 and "'train'" in err


def test_resume_below_the_checkpoint_step_is_refused(tmp_path, make_config, fake_plugin, fake_bundle):
    from driftar_core.config import ConfigError
    from driftar_core.train import train
    run = train(make_config(steps=2, log_every=1, sample_every=0, ckpt_every=2), bundle=fake_bundle, progress=False)
    with pytest.raises(ConfigError, match=r"below the step of the checkpoint"):
        train(make_config(steps=1), bundle=fake_bundle, resume=str(run), progress=False)
