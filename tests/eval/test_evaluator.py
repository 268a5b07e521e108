"""The shipped digits evaluator: its recorded accuracy, its features, and its training recipe."""
from __future__ import annotations

import pytest
import torch

from driftar_core.eval.evaluator import (DigitsClassifier, EvaluatorConfig, EvaluatorRecipe, accuracy, embed,
                                         random_shift, recipe_command, train_evaluator)


def test_accuracy_on_real_test_images_equals_the_card(evaluator, evaluator_card, digits):
    _, test = digits
    acc, correct = accuracy(evaluator, test.images, test.labels)
    assert correct == evaluator_card.metrics["test_correct"]
    assert len(test) == evaluator_card.metrics["test_total"]
    assert acc == evaluator_card.metrics["test_accuracy"]
    assert acc >= 0.97  # the target


def test_accuracy_does_not_depend_on_batch_size(evaluator, digits):
    _, test = digits
    _, a = embed(evaluator, test.images, batch_size=50)
    _, b = embed(evaluator, test.images, batch_size=512)
    assert torch.equal(a.argmax(1), b.argmax(1))


def test_features_shape_and_eval_mode(evaluator, digits):
    _, test = digits
    feats, logits = embed(evaluator, test.images[:5])
    assert feats.shape == (5, 64) and logits.shape == (5, 10)
    assert not evaluator.training


def test_wrong_image_size_is_a_clear_error(evaluator):
    with pytest.raises(ValueError, match=r"expects images \[B, 1, 16, 16\]"):
        evaluator.features(torch.zeros(2, 1, 8, 8))


def test_random_shift_moves_content_and_pads_with_background():
    x = -torch.ones(64, 1, 16, 16)
    x[:, :, 7:9, 7:9] = 1.0
    y = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert torch.all((y == 1).flatten(1).sum(1) == 4)              # a centred blob stays whole
    assert len({tuple(torch.nonzero(img[0] == 1)[0].tolist()) for img in y}) > 5
    assert torch.equal(random_shift(x, 0, torch.Generator()), x)


def test_recipe_command_lists_only_non_defaults():
    assert recipe_command(EvaluatorRecipe(), "out") == "python -m driftar_core.eval.evaluator --out out"
    assert recipe_command(EvaluatorRecipe(epochs=3), "o") == "python -m driftar_core.eval.evaluator --out o --epochs 3"


def test_training_writes_a_loadable_zoo_entry(tmp_path):
    from driftar_core.pretrained import load_evaluator
    from driftar_core.zoo import load_card
    model, metrics = train_evaluator(tmp_path, EvaluatorRecipe(epochs=1), EvaluatorConfig(width=4, feature_dim=8),
                                     log=None)
    card = load_card(tmp_path)
    assert card.kind == "evaluator" and card.name == "digits_evaluator.digits"
    assert card.command == f"python -m driftar_core.eval.evaluator --out {tmp_path} --epochs 1"
    fresh = DigitsClassifier(EvaluatorConfig(width=4, feature_dim=8))
    assert card.num_params == model.num_params() == fresh.num_params()
    loaded = load_evaluator(card)
    assert loaded.feature_dim == 8
    assert accuracy(loaded, *_test_split())[1] == metrics["test_correct"]
    assert (tmp_path / "README.md").read_text().count(card.command) == 1


def _test_split():
    from driftar_core.data.digits import DigitsDataset
    test = DigitsDataset("test")
    return test.images, test.labels
