"""Configs: unknown keys and bad values fail before any work, naming the key."""
from __future__ import annotations

import pytest

from driftar_core.config import ConfigError, RunConfig, build_run_config, parse_overrides


def test_defaults_validate():
    cfg = RunConfig()
    assert cfg.optim.betas == (0.9, 0.95)


def test_set_overrides_nested_and_typed():
    assert parse_overrides(["optim.lr=3e-4", "train.steps=10", "model.args.depth=2", "train.name=x"]) == {
        "optim": {"lr": 3e-4}, "train": {"steps": 10, "name": "x"}, "model": {"args": {"depth": 2}}}
    cfg = build_run_config(overrides=["optim.lr=0.01", "train.device=cpu"])
    assert cfg.optim.lr == 0.01 and cfg.train.device == "cpu"


def test_unknown_key_is_named():
    with pytest.raises(ConfigError) as e:
        build_run_config(overrides=["optim.lrr=1"])
    assert "optim.lrr" in str(e.value) and "lr" in str(e.value)


def test_bad_literal_lists_allowed_values():
    with pytest.raises(ConfigError) as e:
        build_run_config(overrides=["train.device=tpu"])
    msg = str(e.value)
    assert "train.device" in msg and "'cpu'" in msg and "'cuda'" in msg


def test_bad_type_is_named():
    with pytest.raises(ConfigError, match="train.steps"):
        build_run_config(overrides=["train.steps=many"])


def test_set_needs_equals():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["optim.lr"])


def test_recipe_file_then_overrides(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[optim]\nlr = 0.5\n[train]\nsteps = 7\n')
    cfg = build_run_config(recipe, overrides=["train.steps=9"])
    assert cfg.optim.lr == 0.5 and cfg.train.steps == 9


def test_bad_toml_is_reported(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        build_run_config(bad)
