"""Model cards: the schema, the shipped cards against their files, sha256 checks, registry discovery."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

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


def test_evaluator_card_metrics_recompute(evaluator_card, evaluator):
    """Catches: an evaluator card whose accuracy or real-vs-real FDs do not belong to its weights (a
    retrained evaluator shipped with the old card, or numbers copied by hand). Everything here is
    deterministic, so the counts match exactly and the FDs to the card's 4 decimals (1e-3 for BLAS)."""
    from driftar_core.data.digits import DigitsDataset
    from driftar_core.eval.evaluator import accuracy, reference_fds
    m = evaluator_card.metrics
    test, train = DigitsDataset("test"), DigitsDataset("train")
    acc, correct = accuracy(evaluator, test.images, test.labels)
    assert (correct, len(test)) == (m["test_correct"], m["test_total"])
    assert acc == pytest.approx(m["test_accuracy"], abs=1e-12)
    assert accuracy(evaluator, train.images, train.labels)[0] == pytest.approx(m["train_accuracy"], abs=1e-12)
    for key, value in reference_fds(evaluator).items():          # seeds 0-2, as the card was made
        assert value == pytest.approx(m[key], abs=1e-3), key


def binomial_min_correct(n: int, p: float, alpha: float = 1e-3) -> int:
    """The least c with P(X < c) > alpha for X ~ Binomial(n, p): fewer than c correct is a < alpha event."""
    cdf = 0.0
    for k in range(n + 1):
        cdf += math.comb(n, k) * p ** k * (1 - p) ** (n - k)
        if cdf > alpha:
            return k
    return n


def generator_cards():
    return [c for c in shipped_cards() if c.kind == "generator"]


@pytest.mark.parametrize("card", generator_cards(), ids=lambda c: c.name)
def test_generator_card_metrics_reproduce_on_a_few_samples(card, evaluator):
    """Catches: a card whose pass counts, class accuracy or reference FDs do not belong to its weights, sampler
    and seeds (metrics copied from another model, a sampler whose cost changed, broken class conditioning).

    Re-measured with the card's own evaluation seeds and batch size (cards that predate ``eval_seeds`` /
    ``eval_batch`` were made by ``driftar eval`` with seeds 0-2 at batch 128):
    - the real-vs-real FDs depend only on the evaluator and the seeds: recomputed to the card's 4 decimals;
    - pass counts per image: exact for a sequential sampler (they do not depend on the images); a speculative
      sampler's are averaged over the 20 images and must lie within 15% of the card's (nextstep1_tiny_drift at
      batch 1, seeds 2000-2009: target passes 11.8-13.3, head NFE 22.5-25.6, draft passes 62.3-71.2 against
      the card's 12.4 / 23.7 / 65.2 on 1077 images, i.e. at most 9% off);
    - class accuracy on 20 images (digits 0-9 twice): at the card's accuracy p (capped at 0.995: 1.0 over 1077
      images is no proof of p = 1) fewer than ``binomial_min_correct(20, p)`` correct (17-18) has probability
      < 1e-3. Measured on seeds 2000-2009: 18-20 correct for every shipped generator, 19-20 at seed 2000."""
    from driftar_core.eval.evaluate import reference
    from driftar_core.eval.evaluator import embed
    from driftar_core.eval.metrics import fd_halves, frechet_distance
    from driftar_core.speculative import select_sampler
    m = card.metrics
    seeds = [int(s) for s in m.get("eval_seeds", [0, 1, 2])]
    batch = int(m.get("eval_batch", 128))
    card_draft = m["nfe_per_image"] - m["backbone_passes_per_image"] - m["head_nfe_per_image"]   # nfe = sum of all
    assert card_draft >= 0

    ref = reference(evaluator)
    assert m["eval_samples"] == len(ref.test_feats) == 359           # scored against the whole test split
    floors, halves = [], []
    for seed in seeds:                                               # what driftar eval draws per seed
        sub = torch.randperm(len(ref.train_feats), generator=torch.Generator().manual_seed(seed))[:m["eval_samples"]]
        floors.append(frechet_distance(ref.train_feats[sub], ref.test_feats))
        halves.append(fd_halves(ref.test_feats, ref.test_labels, seed=seed))
    assert m["fd_floor"] == pytest.approx(sum(floors) / len(floors), abs=1e-3)
    assert m["fd_halves"] == pytest.approx(sum(halves) / len(halves), abs=1e-3)

    bundle = load_pretrained(card)
    sampler, labels = select_sampler(bundle), torch.arange(20) % 10
    g = torch.Generator().manual_seed(seeds[0])
    images, calls = [], []
    with torch.inference_mode():
        for i in range(0, len(labels), batch):
            out = sampler(bundle, labels[i:i + batch], generator=g)
            images.append(out.images)
            calls.append((out.counts.backbone_passes, out.counts.head_nfe, out.counts.draft_passes))
    measured = [sum(c[j] for c in calls) / len(calls) for j in range(3)]
    expected = [m["backbone_passes_per_image"], m["head_nfe_per_image"], card_draft]
    if all(c[2] == 0 for c in calls):                                # sequential: the counts are fixed
        assert measured == expected, (measured, expected)
    else:                                                            # speculative: a mean over 20 images
        assert measured == pytest.approx(expected, rel=0.15), (measured, expected)
    _, logits = embed(evaluator, torch.cat(images))
    correct = int((logits.argmax(1) == labels).sum())
    need = binomial_min_correct(len(labels), min(m["class_accuracy"], 0.995))
    assert correct >= need, (correct, need, m["class_accuracy"])


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
