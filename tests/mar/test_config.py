"""MARConfig validation, presets and the plugin's registrations."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from driftar_mar import plugin
from driftar_mar.config import MARConfig
from driftar_mar.presets import PRESETS

from driftar_core.config import ConfigError, RunConfig, load_toml, validate
from driftar_core.registry import Registries


def test_defaults_are_the_tiny_digits_model():
    cfg = MARConfig()
    assert (cfg.seq_len, cfg.token_dim) == (64, 4)
    assert cfg.diffloss.num_sampling_steps == 100 and cfg.diffloss.learn_sigma
    assert cfg.label_drop_prob == 0.1 and cfg.mask_ratio_min == 0.7


def test_partial_sampling_override_keeps_the_model_defaults():
    cfg = MARConfig(sampling={"num_iter": 8})
    assert cfg.sampling.num_iter == 8 and cfg.sampling.cfg == MARConfig().sampling.cfg


def test_unknown_key_and_bad_values_fail_with_the_key_named():
    with pytest.raises(ConfigError, match="encoder_dpth"):
        validate(MARConfig, {"encoder_dpth": 3}, where="model")
    with pytest.raises(ConfigError, match="head_type"):
        validate(MARConfig, {"head_type": "flow"}, where="model")
    with pytest.raises(ValueError, match="divisible"):
        MARConfig(encoder_embed_dim=30, encoder_num_heads=4)
    with pytest.raises(ValueError, match="num_iter"):
        MARConfig(sampling={"num_iter": 65})


# Hand-copied from docs/backbones.md "MAR: sizes" (B/L/H) and the tiny defaults (config.py): depth enc/dec,
# width, heads, head depth/width, L, c, sampling (K, cfg, schedule, temperature), head type
PRESET_TABLE = {
    "tiny": (2, 2, 96, 4, 3, 96, 64, 4, (16, 3.0, "linear", 1.0), "diffloss"),
    "tiny_drift": (2, 2, 96, 4, 3, 96, 64, 4, (16, 3.0, "linear", 1.2), "drift"),
    "base": (12, 12, 768, 12, 6, 1024, 256, 16, (256, 2.9, "linear", 1.0), "diffloss"),
    "large": (16, 16, 1024, 16, 8, 1280, 256, 16, (256, 3.0, "linear", 1.0), "diffloss"),
    "huge": (20, 20, 1280, 16, 12, 1536, 256, 16, (256, 3.2, "linear", 1.0), "diffloss"),
}


def assert_applied(preset: dict, dumped: dict, where: str = "") -> None:
    """Every (nested) key the preset sets has that value in the validated config."""
    for key, value in preset.items():
        if isinstance(value, dict):
            assert_applied(value, dumped[key], f"{where}{key}.")
        else:
            assert dumped[key] == value, f"{where}{key}: preset {value!r}, config {dumped[key]!r}"


def test_preset_table_is_complete():
    assert sorted(PRESETS) == sorted(PRESET_TABLE)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_validate(name):
    """Catches: a preset key silently dropped or overwritten on validation (e.g. a partial ``sampling``
    section resetting cfg / num_iter to SamplingConfig's generic defaults), or a preset drifting from the
    documented MAR-B/L/H shapes."""
    cfg = MARConfig(**PRESETS[name])
    assert_applied(PRESETS[name], cfg.model_dump())
    enc, dec, width, heads, head_depth, head_width, seq_len, token_dim, sampling, head_type = PRESET_TABLE[name]
    assert (cfg.encoder_depth, cfg.decoder_depth) == (enc, dec)
    assert cfg.encoder_embed_dim == cfg.decoder_embed_dim == width
    assert cfg.encoder_num_heads == cfg.decoder_num_heads == heads
    assert (cfg.diffloss.depth, cfg.diffloss.width) == (head_depth, head_width)
    assert (cfg.seq_len, cfg.token_dim) == (seq_len, token_dim)
    s = cfg.sampling
    assert (s.num_iter, s.cfg, s.cfg_schedule, s.temperature) == sampling
    assert cfg.head_type == head_type
    if name in ("base", "large", "huge"):                           # the paper's ImageNet settings
        assert (cfg.class_num, cfg.buffer_size, cfg.attn_dropout, cfg.proj_dropout) == (1000, 64, 0.1, 0.1)
        assert cfg.diffloss.clip_x0 is None and cfg.diffloss.num_sampling_steps == 100
    if name == "tiny_drift":                                         # the drift section keeps MAR's own defaults
        assert (cfg.drift_ar.decoder.width, cfg.drift_ar.decoder.depth) == (128, 3)


def test_plugin_module_does_not_import_torch():
    code = "import sys, driftar_mar.plugin; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hooks_register_backbone_presets_head_and_recipe():
    reg = Registries()
    plugin.driftar_register_backbones(reg.backbone_callback("mar"))
    plugin.driftar_register_heads(reg.named_callback(reg.heads, "mar"))
    plugin.driftar_register_recipes(reg.recipe_callback("mar"))
    assert reg.models.names("mar_*") == ["mar_base", "mar_huge", "mar_large", "mar_tiny", "mar_tiny_drift"]
    bundle = reg.models.get("mar_tiny").factory()
    assert bundle.arch == "mar_tiny" and bundle.backbone_name == "mar"
    head = reg.heads.get("diffloss")({"depth": 1, "width": 16, "num_sampling_steps": 5}, 8, 4)
    assert head.nfe == 5 and head.noise_shape == (6, 4)
    recipe = reg.recipes.get("mar/baseline")
    run = validate(RunConfig, load_toml(recipe.path))
    assert run.backbone == "mar" and run.model.arch == "mar_tiny"
    drift = validate(RunConfig, load_toml(reg.recipes.get("mar/drift").path))
    assert drift.recipe == "drift" and drift.model.arch == "mar_tiny_drift"


def test_base_param_count_on_meta_device():
    """MAR-B/L/H with diffloss: 207.9M / 478.3M / 942.4M (docs/backbones.md "MAR: sizes"), no memory used."""
    from driftar_mar.build import build_mar
    expected = {"base": 207.9e6, "large": 478.3e6, "huge": 942.4e6}
    for name, n in expected.items():
        with torch.device("meta"):
            bundle = build_mar(MARConfig(**PRESETS[name]))
        assert abs(bundle.num_params() - n) < 0.05e6, name
