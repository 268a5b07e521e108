"""Model cards: the schema, the shipped cards against their files, sha256 checks, registry discovery."""
from __future__ import annotations

import json
import shutil

import pytest

from driftar_core.bundle import CheckpointError
from driftar_core.hookspecs import hookimpl
from driftar_core.files import sha256_file
from driftar_core.pretrained import load_evaluator, load_pretrained
from driftar_core.zoo import ModelCard, load_card, save_card

REQUIRED = ["name", "arch", "tag", "weights", "sha256", "num_params", "metrics", "command", "dataset", "license",
            "created"]


def shipped_cards():
    from driftar_zoo.plugin import card_paths
    return [load_card(p) for p in card_paths()]


def card_dict(**changes):
    d = {"kind": "generator", "name": "mar_tiny.digits", "arch": "mar_tiny", "tag": "digits", "backbone": "mar",
         "weights": "model.safetensors", "sha256": "0" * 64, "num_params": 10, "metrics": {"fd": 1.0},
         "command": "driftar train --backbone mar", "dataset": "digits", "license": "Apache-2.0",
         "created": "2026-01-01"}
    d.update(changes)
    return d


@pytest.mark.parametrize("field", REQUIRED)
def test_card_requires_field(field):
    d = card_dict()
    del d[field]
    with pytest.raises(ValueError, match=field):
        ModelCard.model_validate(d)


@pytest.mark.parametrize("changes, match", [
    ({"colour": "red"}, "colour"),                                   # extra="forbid"
    ({"name": "mar_tiny.other"}, "arch.tag"),                         # name = arch.tag
    ({"tag": "", "name": "mar_tiny."}, "arch.tag"),
    ({"backbone": None}, "backbone"),                                 # generators need their plugin
    ({"weights": "../elsewhere.safetensors"}, "inside"),
    ({"weights": "model.pth"}, "safetensors"),                        # safetensors only
    ({"sha256": "abc"}, "sha256"),
    ({"num_params": 0}, "num_params"),
    ({"kind": "tokenizer"}, "kind"),
])
def test_card_rejects(changes, match):
    with pytest.raises(ValueError, match=match):
        ModelCard.model_validate(card_dict(**changes))


def test_evaluator_card_needs_no_backbone():
    card = ModelCard.model_validate(card_dict(kind="evaluator", backbone=None, name="e.d", arch="e", tag="d"))
    assert card.kind == "evaluator"


def test_card_round_trip(tmp_path):
    card = ModelCard.model_validate(card_dict())
    save_card(card, tmp_path / "card.json")
    again = load_card(tmp_path)
    assert again == card and again.weights_path == tmp_path.resolve() / "model.safetensors"


def test_invalid_card_file_names_the_file(tmp_path):
    (tmp_path / "card.json").write_text(json.dumps(card_dict(colour="red")))
    with pytest.raises(ValueError, match=r"(?s)card\.json.*colour"):
        load_card(tmp_path)


def test_zoo_ships_the_evaluator():
    assert "digits_evaluator.digits" in {c.name for c in shipped_cards()}


@pytest.mark.parametrize("card", shipped_cards(), ids=lambda c: c.name)
def test_shipped_card_matches_its_files(card):
    assert card.name == card.directory.name
    assert sha256_file(card.weights_path) == card.sha256
    assert (card.directory / "README.md").is_file() and (card.directory / "config.json").is_file()
    assert card.command.strip() and card.metrics
    model = load_pretrained(card)
    assert sum(p.numel() for p in model.parameters()) == card.num_params


def test_corrupted_weights_fail_with_sha_mismatch(tmp_path, evaluator_card):
    copy = tmp_path / evaluator_card.name
    shutil.copytree(evaluator_card.directory, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-100] ^= 0xFF                                          # flip one byte of a weight
    (copy / "model.safetensors").write_bytes(bytes(data))
    card = load_card(copy)
    with pytest.raises(CheckpointError, match=r"corrupt: sha256 mismatch") as err:
        load_evaluator(card)
    assert str(copy / "model.safetensors") in str(err.value)
    assert "re-create it with: python -m driftar_core.eval.evaluator" in str(err.value)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_pretrained(card)


def test_missing_weights_fail_clearly(tmp_path, evaluator_card):
    copy = tmp_path / evaluator_card.name
    shutil.copytree(evaluator_card.directory, copy)
    (copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="not found"):
        load_evaluator(load_card(copy))


def test_load_evaluator_refuses_a_generator_card(tmp_path):
    card = ModelCard.model_validate(card_dict())
    with pytest.raises(ValueError, match="not an evaluator"):
        load_evaluator(card)


def test_plugin_registers_every_shipped_card():
    from driftar_zoo import plugin
    registered = []
    plugin.driftar_register_models(registered.append)
    assert [c.name for c in registered] == [c.name for c in shipped_cards()]


def test_zoo_is_discovered_through_its_entry_point():
    # the installed driftar-zoo distribution, found via the `driftar` entry-point group
    from driftar_core.factory import create_model, list_models
    assert "digits_evaluator.digits" in list_models(pretrained=True)
    assert "digits_evaluator.digits" in list_models("digits_*", pretrained=True)
    model = create_model("digits_evaluator.digits")
    assert model.feature_dim == 64 and not model.training
    assert load_evaluator().num_params() == model.num_params()


# -------------------------------------------------------------------------------------------------
# A generator card, through a fake backbone plugin registered for one test
# -------------------------------------------------------------------------------------------------


class _FakePlugin:
    """Registers backbone ``fakebb`` (preset ``tiny``) whose bundle is two small linear layers."""

    @staticmethod
    def spec():
        from pydantic import BaseModel, ConfigDict, Field

        from driftar_core.config import SamplingConfig
        from driftar_core.registry import BackboneSpec

        class FakeConfig(BaseModel):
            model_config = ConfigDict(extra="forbid")
            width: int = 4
            sampling: SamplingConfig = Field(default_factory=SamplingConfig)

        def build(config):
            from torch import nn

            from driftar_core.bundle import ModelBundle
            from driftar_core.tokenizers.patch import PatchTokenizer
            return ModelBundle(PatchTokenizer(), nn.Linear(4, config.width), nn.Linear(config.width, 4), config,
                               "fakebb")

        return BackboneSpec("fakebb", FakeConfig, build, presets={"tiny": {"width": 3}})

    @hookimpl
    def driftar_register_backbones(self, register):
        register(self.spec())


def test_generator_card_loads_and_detects_corruption(tmp_path, register_plugin):
    import torch

    from driftar_core.factory import create_model
    from driftar_core.zoo import make_card
    register_plugin(_FakePlugin(), "fake-zoo-test")
    bundle = create_model("fakebb_tiny", sampling={"num_iter": 5})
    bundle.save(tmp_path)
    card = make_card(tmp_path, "fakebb_tiny.test", backbone="fakebb", num_params=bundle.num_params(),
                     metrics={"fd": 1.0}, command="pytest", dataset="none")
    loaded = load_pretrained(load_card(tmp_path), sampling={"temperature": 0.5})
    assert loaded.arch == "fakebb_tiny" and not loaded.training
    assert loaded.config.sampling.num_iter == 5 and loaded.config.sampling.temperature == 0.5
    assert all(torch.equal(a, b) for a, b in zip(bundle.state_dict().values(), loaded.state_dict().values()))
    assert sum(p.numel() for p in loaded.parameters()) == card.num_params
    (tmp_path / "model.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="corrupt: sha256 mismatch"):
        load_pretrained(load_card(tmp_path))
