"""Score a generator against the held-out real digits: FD (next to its real-vs-real floor), precision,
recall, density, coverage, class-conditional accuracy and pass counts, each as a mean and spread over
sampling seeds.

    evaluate(bundle)                     # sample, then score (what `driftar eval` and `driftar bench` call)
    evaluate_images(images, labels)      # score any images, e.g. the real train split as a sanity check

Sample sizes (FD is biased by them; see driftar_core.eval.metrics):
- the reference is the whole digits TEST split (359 images), embedded by the zoo evaluator;
- by default a model generates exactly as many images, with the test split's class histogram;
- ``fd_floor``: FD of as many real TRAIN images as were generated vs the test split: what a perfect
  generator scores at this sample size (the same size as the scored set, so a good model never sits
  below it); read ``fd`` against it;
- ``fd_halves``: FD between two disjoint halves of the test split (~180 vs ~180). It is NOT a floor
  for ``fd``: at half the sample size FD is biased upwards (a good model scores below it).
"""
from __future__ import annotations

import functools
import time
import weakref
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from driftar_core.eval.evaluator import DigitsClassifier, embed
from driftar_core.eval.metrics import (class_accuracy, density_coverage, fd_halves, frechet_distance,
                                       precision_recall, repeat_over_seeds)
from driftar_core.seeds import EVAL_SEEDS as DEFAULT_SEEDS  # held out from training and tuning


class Reference:
    """Evaluator features of the real test split (the FD reference) and of the train split."""

    def __init__(self, evaluator: DigitsClassifier):
        from driftar_core.data.digits import DigitsDataset
        size = evaluator.config.image_size
        test, train = DigitsDataset("test", image_size=size), DigitsDataset("train", image_size=size)
        self.test_labels, self.train_labels = test.labels, train.labels
        self.test_feats, _ = embed(evaluator, test.images)      # [359, F]
        self.train_feats, _ = embed(evaluator, train.images)    # [1438, F]

    def labels(self, n: int) -> Tensor:
        """n class labels, class-balanced: the test labels interleaved by class, tiled to length n.

        At n = len(test) they are exactly the test split's labels, so both sets have the same class mix.
        """
        y = self.test_labels
        rank = torch.empty_like(y)
        for c in torch.unique(y):
            idx = torch.nonzero(y == c).flatten()
            rank[idx] = torch.arange(len(idx))
        order = torch.argsort(rank * (int(y.max()) + 1) + y)      # 0,1,..,9,0,1,..,9,...
        return y[order][torch.arange(n) % len(y)]


_REFERENCES: "weakref.WeakKeyDictionary[DigitsClassifier, Reference]" = weakref.WeakKeyDictionary()


def reference(evaluator: DigitsClassifier) -> Reference:
    """The Reference of ``evaluator``, computed once per evaluator object (the evaluator is frozen)."""
    if evaluator not in _REFERENCES:
        _REFERENCES[evaluator] = Reference(evaluator)
    return _REFERENCES[evaluator]


@functools.lru_cache(maxsize=1)
def default_evaluator() -> DigitsClassifier:
    """The zoo's ``digits_evaluator.digits``, loaded once per process (kept on CPU, in eval mode)."""
    from driftar_core.pretrained import load_evaluator
    return load_evaluator()


def score(feats: Tensor, logits: Tensor | None, labels: Tensor | None, ref: Reference, seed: int,
          k: int = 3) -> dict[str, float]:
    """Metrics of one feature set [N, F] against the reference (one seed of the floor / train draw)."""
    precision, recall = precision_recall(ref.test_feats, feats, k=k)
    density, coverage = density_coverage(ref.test_feats, feats, k=k)
    g = torch.Generator().manual_seed(seed)
    train_sub = torch.randperm(len(ref.train_feats), generator=g)[:len(feats)]
    out = {"fd": frechet_distance(feats, ref.test_feats),
           "fd_floor": frechet_distance(ref.train_feats[train_sub], ref.test_feats),   # real, same size
           "fd_halves": fd_halves(ref.test_feats, ref.test_labels, seed=seed),
           "precision": precision, "recall": recall, "density": density, "coverage": coverage}
    if logits is not None and labels is not None:
        out["class_accuracy"] = class_accuracy(logits, labels)
    return out


def _summary(spread: dict[str, Any], **info: Any) -> dict[str, Any]:
    per_seed = spread.pop("per_seed")
    return {**spread, **info, "per_seed": per_seed}


def evaluate_images(images: Tensor, labels: Tensor | None = None, *, evaluator: DigitsClassifier | None = None,
                    seeds: Sequence[int] = (0,), k: int = 3) -> dict[str, Any]:
    """Score fixed images [N, 1, 16, 16] in [-1, 1] (labels [N] for class accuracy) against the test split.

    Seeds only vary the train draw of ``fd_floor`` and the split of ``fd_halves``. On the real train
    split (N = 1438) ``fd`` is near ``fd_floor`` and class accuracy near the evaluator's train accuracy.
    """
    evaluator = evaluator or default_evaluator()
    ref = reference(evaluator)
    feats, logits = embed(evaluator, images)
    spread = repeat_over_seeds(lambda s: score(feats, logits, labels, ref, s, k), seeds)
    return _summary(spread, num_samples=len(images), num_reference=len(ref.test_feats), seeds=list(seeds), k=k)


def own_sampler_batch(bundle: Any, default: int = 128) -> int:
    """The batch size at which a model's default sampler is what it claims: a model that decodes
    speculatively up to ``speculative.max_batch`` samples is scored on speculative samples, at that batch
    size (never on the sequential decoder's, which its default runs above it)."""
    spec = getattr(bundle, "sampler", None)
    if spec is not None and getattr(spec, "kind", None) == "speculative" and spec.speculative is not None:
        return spec.speculative.max_batch
    return default


def evaluate(bundle: Any, num_samples: int | None = None, seeds: Sequence[int] = DEFAULT_SEEDS,
             batch_size: int = 128, sample_kwargs: dict[str, Any] | None = None, *,
             sampler: Callable[..., Any] | None = None, evaluator: DigitsClassifier | None = None,
             k: int = 3, progress: bool | None = None) -> dict[str, Any]:
    """Sample ``num_samples`` class-balanced images per seed and score them against the digits test split.

    :param num_samples: images per seed; None = the test split's size (359), the size at which FD is
        compared with ``fd_floor`` (real train images of the same number vs the test split).
    :param sample_kwargs: passed to the sampler (num_iter, cfg, temperature, ...); unset ones fall back
        to ``bundle.config.sampling``.
    :param sampler: ``sampler(bundle, labels, generator=..., **sample_kwargs) -> SampleOutput``;
        default :func:`driftar_core.sampling.generate` (the plain AR loop).
    :returns: ``fd, fd_floor, fd_halves, class_accuracy, precision, recall, density, coverage`` (means
        over seeds), each with ``<key>_std``; ``counts`` (mean passes per sampling call = per image:
        backbone_passes, head_nfe, draft_passes, nfe, extras such as acceptance_rate); ``per_seed``;
        sample sizes and settings.
    """
    from tqdm.auto import tqdm

    from driftar_core.sampling import generate

    sampler = sampler or generate
    sample_kwargs = dict(sample_kwargs or {})
    evaluator = evaluator or default_evaluator()
    ref = reference(evaluator)
    n = len(ref.test_feats) if num_samples is None else num_samples
    if n <= k:
        raise ValueError(f"num_samples must be larger than k={k} (k-NN precision/recall), got {n}")
    labels = ref.labels(n)
    device = getattr(bundle, "device", torch.device("cpu"))
    batches = [labels[i:i + batch_size] for i in range(0, n, batch_size)]
    bar = tqdm(total=len(batches) * len(seeds), desc="eval sampling", unit="batch",
               disable=None if progress is None else not progress)
    counts: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def one_seed(seed: int) -> dict[str, float]:
        g = torch.Generator().manual_seed(seed)
        images = []
        for y in batches:
            out = sampler(bundle, y.to(device), generator=g, **sample_kwargs)
            images.append(out.images.detach().float().cpu())
            counts.append(out.counts.as_dict())
            bar.update(1)
        x = torch.cat(images)                                               # [n, 1, 16, 16]
        bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
        if bad:
            from driftar_core.bundle import NonFiniteError
            raise NonFiniteError(f"{bad} of {n} generated images contain NaN/inf (seed {seed}); the model is broken")
        feats, logits = embed(evaluator, x)
        return score(feats, logits, labels, ref, seed, k)

    try:
        spread = repeat_over_seeds(one_seed, seeds)
    finally:
        bar.close()
    return _summary(spread, counts=_mean_counts(counts), num_samples=n, num_reference=len(ref.test_feats),
                    seeds=list(seeds), k=k, batch_size=batch_size, sample_kwargs=sample_kwargs,
                    seconds=round(time.perf_counter() - t0, 2))


def _mean_counts(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each numeric pass count over sampling calls (every call is one batch)."""
    keys = [key for key in rows[0] if all(isinstance(r.get(key), (int, float)) for r in rows)] if rows else []
    return {key: sum(r[key] for r in rows) / len(rows) for key in keys}
