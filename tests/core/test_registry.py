"""Registry behaviour: arch.tag names, fnmatch listing, close-match errors, duplicates."""
from __future__ import annotations

import pytest

from driftar_core.hookspecs import hookimpl
from driftar_core.factory import list_models
from driftar_core.registry import DuplicateNameError, Registry, UnknownNameError, split_model_name_tag


def test_split_name_tag():
    assert split_model_name_tag("mar_tiny.digits") == ("mar_tiny", "digits")
    assert split_model_name_tag("mar_tiny") == ("mar_tiny", "")


def test_unknown_name_lists_closest_matches():
    reg = Registry("model")
    for n in ("mar_tiny", "mar_base", "nextstep1_tiny"):
        reg.register(n, object())
    with pytest.raises(UnknownNameError) as e:
        reg.get("mar_tinny")
    assert "did you mean: mar_tiny" in str(e.value)


def test_duplicate_fails_unless_replaced():
    reg = Registry("backbone")
    reg.register("x", 1, source="a")
    with pytest.raises(DuplicateNameError, match="already registered by plugin 'a'"):
        reg.register("x", 2, source="b")
    reg.register("x", 3, replace=True)
    assert reg.get("x") == 3


def test_fnmatch_and_natural_sort():
    reg = Registry("model")
    for n in ("mar_huge", "mar_base", "mar_large", "transdiff_b", "m10", "m9"):
        reg.register(n, None)
    assert reg.names("mar*") == ["mar_base", "mar_huge", "mar_large"]
    assert reg.names("m*", exclude="mar*") == ["m9", "m10"]


class _ToyBackbonePlugin:
    """A backbone registered by a plugin object: its presets become model architectures."""

    @hookimpl
    def driftar_register_backbones(self, register):
        from pydantic import BaseModel, ConfigDict

        class ToyConfig(BaseModel):
            model_config = ConfigDict(extra="forbid")
            width: int = 8

        from driftar_core.registry import BackboneSpec
        register(BackboneSpec(name="toy", config_cls=ToyConfig, build=lambda c: c,
                              presets={"small": {"width": 4}, "big": {"width": 64}}))


def test_backbone_presets_become_models(register_plugin):
    register_plugin(_ToyBackbonePlugin(), "toy-plugin")
    assert list_models("toy_*") == ["toy_big", "toy_small"]
    from driftar_core.plugins import registries
    arch = registries().models.get("toy_small")
    assert arch.backbone == "toy" and arch.preset == {"width": 4}
    assert registries().models.entry("toy_small").source == "toy-plugin"


def test_a_duplicate_backbone_fails_the_later_plugin_only(register_plugin, capsys):
    pm = register_plugin(_ToyBackbonePlugin(), "toy-plugin")
    register_plugin(_ToyBackbonePlugin(), "toy-plugin-2")
    from driftar_core.plugins import registries
    try:
        reg = registries()                                     # the clash isolates toy-plugin-2, nothing else
        assert reg.backbones.entry("toy").source == "toy-plugin" and "mar" in reg.backbones
        failure = next(f for f in pm.failures if f.name == "toy-plugin-2")
        assert "already registered by plugin 'toy-plugin'" in failure.error
        assert "toy-plugin-2" in capsys.readouterr().err
    finally:
        pm.isolated.discard("toy-plugin-2")
        pm.failures[:] = [f for f in pm.failures if f.name != "toy-plugin-2"]


def test_the_default_recipe_is_declared_not_guessed_from_its_name():
    from driftar_core.plugins import registries
    from driftar_core.registry import Registries
    reg = Registries()
    register = reg.recipe_callback("p")
    register("solo", "warmup", "warmup.toml")
    assert reg.default_recipe("solo").name == "warmup"                     # a backbone's only recipe
    register("two", "baseline", "b.toml")
    register("two", "drift", "d.toml", after="baseline")
    with pytest.raises(UnknownNameError, match="declares no default recipe; pass --recipe.*baseline, drift"):
        reg.default_recipe("two")                                          # no name is special
    register("two", "tune", "t.toml", objective="baseline", default=True)
    assert reg.default_recipe("two").name == "tune" and reg.default_recipe("two").objective_name == "baseline"
    with pytest.raises(ValueError, match="two/tune is already the default"):
        register("two", "other", "o.toml", default=True)
    built_in = registries()
    assert [built_in.default_recipe(b).name for b in ("mar", "nextstep1")] == ["drift", "drift"]
    assert set(built_in.objectives.names()) >= {"baseline", "drift", "draft"}

