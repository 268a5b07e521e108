"""Sample-quality metrics over feature sets [N, F] (the digits evaluator's penultimate features).

- Frechet distance (FD) between Gaussian fits (Heusel et al. 2017, "GANs trained by a two time-scale
  update rule", Eq. 6): ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).
- Precision and recall by k-NN manifolds (Kynkaanniemi et al. 2019, "Improved precision and recall
  metric for assessing generative models", Eq. 1-3, k = 3), with density and coverage (Naeem et al.
  2020), which real outliers do not fool.
- Class-conditional accuracy: the evaluator's argmax against the label the sample was generated for.
- The real-vs-real noise floor: FD between two disjoint halves of the real reference set.
- ``repeat_over_seeds``: mean and spread of any of these over seeds.

Sample size matters. FD is biased upwards by roughly tr(S1)/N1 + tr(S2)/N2 plus a covariance term,
so FDs are only comparable at equal sample sizes. The digits test split has only 359 images: score
generated sets of the SAME size against it (``driftar_core.eval.evaluate`` does), and remember that
the floor compares two halves (~180 each), so it sits above what a perfect generator would score at
359 vs 359 (``evaluate`` also reports that number: real train images vs the test split).

Everything is computed in float64 on CPU; inputs may be torch tensors or numpy arrays.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor


def _np64(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, F], got shape {list(x.shape)}")
    return x


def _t64(x: Any) -> Tensor:
    return torch.from_numpy(_np64(x))


# -------------------------------------------------------------------------------------------------
# Frechet distance
# -------------------------------------------------------------------------------------------------


def gaussian_stats(feats: Any) -> tuple[np.ndarray, np.ndarray]:
    """feats [N, F] -> mean [F], covariance [F, F] (unbiased, ddof = 1), float64."""
    x = _np64(feats)
    if len(x) < 2:
        raise ValueError(f"a Gaussian fit needs at least 2 samples, got {len(x)}")
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix via eigh (tiny negative eigenvalues from rounding -> 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """FD between N(mu1, sigma1) and N(mu2, sigma2).

    tr((S1 S2)^(1/2)) is computed as sum(sqrt(eig(S1^(1/2) S2 S1^(1/2)))): that matrix is symmetric
    PSD and has the same eigenvalues as S1 S2, so there is no complex ``sqrtm`` and no imaginary part
    to discard (pytorch-fid's ``scipy.linalg.sqrtm`` path needs an eps retry and drops ``.imag``).
    Rank-deficient covariances (fewer samples than dimensions, dead ReLU units) are fine.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    fd = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
    return max(fd, 0.0)  # a set against itself gives ~-1e-12 from rounding


def frechet_distance(feats1: Any, feats2: Any) -> float:
    """FD between Gaussian fits of feature sets [N1, F] and [N2, F] (compare only at equal sizes)."""
    return frechet_distance_from_stats(*gaussian_stats(feats1), *gaussian_stats(feats2))


def split_halves(n: int, labels: Any = None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two disjoint random index halves of range(n), stratified by ``labels`` [n] when given."""
    g = torch.Generator().manual_seed(seed)
    if labels is None:
        perm = torch.randperm(n, generator=g)
        return perm[: n // 2], perm[n // 2:]
    labels = torch.as_tensor(labels)
    a, b, extra_to_a = [], [], True
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        take = len(idx) // 2 + (len(idx) % 2 if extra_to_a else 0)
        extra_to_a ^= bool(len(idx) % 2)  # odd classes alternate which half gets the extra image
        a.append(idx[:take])
        b.append(idx[take:])
    return torch.cat(a), torch.cat(b)


def fd_halves(real_feats: Any, labels: Any = None, seed: int = 0) -> float:
    """Real vs real at half size: FD between two disjoint halves of ``real_feats`` (stratified by labels).

    Both halves have N/2 images, so this is the FD of a perfect generator scored with N/2 samples
    against N/2 real ones; it is larger than what the same generator scores at N vs N, so it is no
    floor for a generator scored at N (driftar_core.eval.evaluate's ``fd_floor`` is the same-size one).
    """
    x = _np64(real_feats)
    a, b = split_halves(len(x), labels, seed)
    return frechet_distance(x[a.numpy()], x[b.numpy()])


# -------------------------------------------------------------------------------------------------
# Precision / recall (k-NN manifolds)
# -------------------------------------------------------------------------------------------------


def knn_radii(feats: Any, k: int = 3, chunk: int = 1024) -> Tensor:
    """Distance of every point [N, F] to its k-th nearest neighbour in the same set (itself excluded)."""
    x = _t64(feats)
    if len(x) <= k:
        raise ValueError(f"k-NN radii need more than k={k} points, got {len(x)}")
    out = [torch.cdist(x[i:i + chunk], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), chunk)]
    return torch.cat(out)  # the (k+1)-th smallest distance skips the point itself (distance 0)


def manifold_coverage(query: Any, support: Any, radii: Tensor, chunk: int = 1024) -> float:
    """Fraction of ``query`` points inside at least one ball B(support_j, radii_j) (Kynkaanniemi Eq. 2)."""
    q, s = _t64(query), _t64(support)
    inside = [(torch.cdist(q[i:i + chunk], s) <= radii[None]).any(1) for i in range(0, len(q), chunk)]
    return float(torch.cat(inside).double().mean())


def precision_recall(real_feats: Any, fake_feats: Any, k: int = 3) -> tuple[float, float]:
    """(precision, recall): precision = fraction of generated samples on the real manifold; recall =
    fraction of real samples on the generated manifold (Kynkaanniemi et al. 2019, k = 3 default)."""
    precision = manifold_coverage(fake_feats, real_feats, knn_radii(real_feats, k))
    recall = manifold_coverage(real_feats, fake_feats, knn_radii(fake_feats, k))
    return precision, recall


def density_coverage(real_feats: Any, fake_feats: Any, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """(density, coverage) of Naeem et al. 2020 ("Reliable fidelity and diversity metrics", Eq. 3-4).

    The outlier-robust companions of precision/recall: k-NN precision counts a generated sample as
    real-like if ANY real ball holds it, and with only ~360 real images a handful of real outliers
    have balls big enough to hold pure noise (precision ~0.55 for uniform noise in the digits
    evaluator's space). Density counts how MANY real balls hold each sample, divided by k (~1 when
    the distributions match, ~0 for noise); coverage is the fraction of real balls that hold at
    least one generated sample.
    """
    r, f = _t64(real_feats), _t64(fake_feats)
    radii = knn_radii(r, k)
    counts = torch.cat([(torch.cdist(f[i:i + chunk], r) <= radii[None]).sum(1) for i in range(0, len(f), chunk)])
    hit = torch.cat([(torch.cdist(r[i:i + chunk], f).min(1).values <= radii[i:i + chunk])
                     for i in range(0, len(r), chunk)])
    return float(counts.double().mean() / k), float(hit.double().mean())


# -------------------------------------------------------------------------------------------------
# Class-conditional accuracy
# -------------------------------------------------------------------------------------------------


def class_accuracy(logits: Any, labels: Any) -> float:
    """Fraction of samples whose evaluator argmax equals the label they were generated for."""
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels)
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} logits but {len(labels)} labels")
    return float((logits.argmax(-1) == labels.to(logits.device)).double().mean())


# -------------------------------------------------------------------------------------------------
# Confidence over seeds
# -------------------------------------------------------------------------------------------------


def repeat_over_seeds(fn: Callable[[int], dict[str, float]], seeds: Sequence[int]) -> dict[str, Any]:
    """Run ``fn(seed) -> {metric: value}`` per seed; return ``{metric: mean, metric_std: std, per_seed}``.

    std is the sample standard deviation (ddof = 1) across seeds; 0.0 with a single seed.
    """
    if not seeds:
        raise ValueError("repeat_over_seeds needs at least one seed")
    runs = [dict(fn(s)) for s in seeds]
    out: dict[str, Any] = {}
    for key in runs[0]:
        vals = [float(r[key]) for r in runs]
        mean = sum(vals) / len(vals)
        var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
        out[key], out[f"{key}_std"] = mean, math.sqrt(var)
    out["per_seed"] = [{"seed": s, **r} for s, r in zip(seeds, runs)]
    return out
