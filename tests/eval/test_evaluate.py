"""``evaluate`` end to end through the real ``driftar_core.sampling.generate`` loop, on fake models whose
output quality is known: class templates plus a little noise (good), and pure noise (bad)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from driftar_core.config import SamplingConfig
from driftar_core.eval.evaluate import Reference, evaluate, evaluate_images
from driftar_core.interfaces import StepOutput, Step
from driftar_core.tokenizers.patch import PatchTokenizer


class TemplateBackbone:
    """One AR step for all positions; z = the tokens of the requested class's template image."""

    def __init__(self, templates):  # [10, L, c]
        self.templates = templates
        self.token_shape = tuple(templates.shape[1:])
        self.z_dim = templates.shape[-1]

    def new_state(self, cond, num_iter, cfg, generator=None):
        assert not cfg
        return {"cond": cond, "tokens": torch.zeros(len(cond), *self.token_shape)}

    def plan(self, state):
        B, L = len(state["cond"]), self.token_shape[0]
        return [Step(positions=torch.arange(L).expand(B, L), progress=1.0)]

    def step(self, state, positions):
        return StepOutput(z=self.templates[state["cond"]])                     # [B, L, c]

    def commit(self, state, positions, tokens):
        state["tokens"][torch.arange(len(tokens))[:, None], positions] = tokens

    def tokens(self, state):
        return state["tokens"]


class NoisyHead:
    """token = z + sigma * temperature * noise (one NFE)."""

    nfe = 1

    def __init__(self, c, sigma):
        self.noise_shape, self.sigma = (1, c), sigma

    def sample(self, z, noise, cfg=1.0, temperature=1.0, entropy=None):
        return z + self.sigma * temperature * noise[:, 0]


def fake_bundle(templates_images, sigma):
    tok = PatchTokenizer()
    templates = tok.encode(templates_images)
    return SimpleNamespace(tokenizer=tok, backbone=TemplateBackbone(templates),
                           head=NoisyHead(templates.shape[-1], sigma),
                           config=SimpleNamespace(sampling=SamplingConfig(cfg=1.0)), device=torch.device("cpu"))


@pytest.fixture(scope="module")
def class_means(digits):
    train, _ = digits
    return torch.stack([train.images[train.labels == c].mean(0) for c in range(10)])   # [10, 1, 16, 16]


def test_evaluate_orders_a_good_and_a_bad_model(evaluator, class_means):
    good = evaluate(fake_bundle(class_means, 0.15), seeds=(0, 1), evaluator=evaluator, progress=False)
    bad = evaluate(fake_bundle(torch.zeros_like(class_means), 1.0), seeds=(0,), evaluator=evaluator, progress=False)
    for key in ("fd", "fd_floor", "fd_halves", "class_accuracy", "precision", "recall", "density", "coverage"):
        assert key in good and f"{key}_std" in good
    assert good["num_samples"] == good["num_reference"] == 359
    assert good["class_accuracy"] > 0.9 and bad["class_accuracy"] < 0.3
    assert good["fd_floor"] < good["fd_halves"] < good["fd"] < bad["fd"]     # the same-size floor is the lower
    # noise sits inside a few real outliers' k-NN balls (precision ~0.5); density/coverage are not fooled
    assert good["precision"] > bad["precision"] and bad["density"] < 0.5 < good["density"]
    assert good["coverage"] > bad["coverage"]
    counts = {k: good["counts"][k] for k in ("backbone_passes", "head_nfe", "draft_passes", "nfe")}
    assert counts == {"backbone_passes": 1, "head_nfe": 1, "draft_passes": 0, "nfe": 2}
    assert [r["seed"] for r in good["per_seed"]] == [0, 1] and good["fd_std"] > 0


def test_evaluate_is_reproducible_and_passes_sample_kwargs(evaluator, class_means):
    bundle = fake_bundle(class_means, 0.3)
    a = evaluate(bundle, num_samples=50, seeds=(3,), batch_size=16, evaluator=evaluator, progress=False)
    b = evaluate(bundle, num_samples=50, seeds=(3,), batch_size=32, evaluator=evaluator, progress=False)
    assert a["fd"] == b["fd"] and a["num_samples"] == 50  # the generator runs on across batches
    cold = evaluate(bundle, num_samples=50, seeds=(3,), evaluator=evaluator, progress=False,
                    sample_kwargs={"temperature": 0.0})  # no noise: exactly the class means
    assert cold["sample_kwargs"] == {"temperature": 0.0} and cold["class_accuracy"] == 1.0
    assert cold["coverage"] < a["coverage"]  # no noise: 10 distinct images cover few real ones


def test_evaluate_uses_a_custom_sampler(evaluator, class_means):
    calls = []

    def sampler(bundle, labels, generator=None, **kw):
        calls.append(len(labels))
        from driftar_core.sampling import generate
        out = generate(bundle, labels, generator=generator, **kw)
        out.counts.extra["acceptance_rate"] = 0.5
        return out

    out = evaluate(fake_bundle(class_means, 0.2), num_samples=30, seeds=(0,), batch_size=20, sampler=sampler,
                   evaluator=evaluator, progress=False)
    assert calls == [20, 10] and out["counts"]["acceptance_rate"] == 0.5


def test_evaluate_rejects_non_finite_samples(evaluator, class_means):
    nan = torch.full_like(class_means, float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        evaluate(fake_bundle(nan, 0.1), num_samples=10, seeds=(0,), evaluator=evaluator, progress=False)


def test_reference_labels_match_the_test_histogram(evaluator, digits):
    _, test = digits
    ref = Reference(evaluator)
    assert torch.equal(torch.bincount(ref.labels(len(test))), torch.bincount(test.labels))
    assert ref.labels(20).tolist() == list(range(10)) * 2


def test_evaluate_images_on_real_data(evaluator, digits):
    train, test = digits
    same = evaluate_images(test.images, test.labels, evaluator=evaluator)
    assert same["fd"] == pytest.approx(0, abs=1e-6) and same["precision"] == same["recall"] == 1.0
    real = evaluate_images(train.images, train.labels, evaluator=evaluator)
    assert real["fd"] == pytest.approx(real["fd_floor"]) and real["class_accuracy"] > 0.99   # all train = the floor
    assert real["fd"] < real["fd_halves"]                                    # half-size FD is no floor
