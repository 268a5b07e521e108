"""Properties of the TRAINED zoo MAR (mar_tiny.digits) that an untrained model cannot show."""
from __future__ import annotations

import torch

from driftar_core.data.digits import DigitsDataset
from driftar_core.factory import create_model


def test_entropy_varies_across_positions_and_samples_on_the_trained_target():
    """docs/method.md "Invariants": E must not be a constant in disguise (the official code's collapse)."""
    b = create_model("mar_tiny.digits")
    ds = DigitsDataset("test")
    tokens = b.tokenizer.encode(ds.images[:64])
    torch.manual_seed(0)
    with torch.no_grad():
        out = b.backbone.forward_train(tokens, ds.labels[:64])             # E [64, L]
    e = out.entropy
    assert e.min() >= 0 and e.max() <= 1
    assert e.std(dim=1).mean() > 0.02          # across positions of one image
    assert e.std(dim=0).mean() > 0.02          # across images at one position
    untrained = create_model("mar_tiny").eval()
    with torch.no_grad():
        e0 = untrained.backbone.forward_train(tokens, ds.labels[:64]).entropy
    assert e.std() > 5 * e0.std()              # training is what makes E informative


def test_trained_baseline_draws_the_requested_classes():
    from driftar_core.eval.evaluate import evaluate_images
    from driftar_core.sampling import generate
    b = create_model("mar_tiny.digits")
    labels = torch.arange(10).repeat(2)
    out = generate(b, labels, num_iter=8, generator=torch.Generator().manual_seed(0))
    assert out.counts.head_nfe == 8 * b.head.nfe
    report = evaluate_images(out.images, labels)
    assert report["class_accuracy"] >= 0.8
