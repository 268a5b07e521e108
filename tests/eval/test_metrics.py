"""Metrics on cases with known answers: FD closed forms, k-NN precision/recall extremes, spreads."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from driftar_core.eval.metrics import (class_accuracy, density_coverage, fd_halves, frechet_distance,
                                       frechet_distance_from_stats, gaussian_stats, knn_radii, precision_recall,
                                       repeat_over_seeds, split_halves)


def gaussian(n, mu, std, seed):
    g = np.random.default_rng(seed)
    return mu + std * g.standard_normal((n, len(mu)))


def test_fd_of_a_set_with_itself_is_zero():
    x = gaussian(400, np.zeros(16), np.ones(16), 0)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(torch.from_numpy(x).float(), torch.from_numpy(x).float()) == pytest.approx(0.0, abs=1e-5)


def test_fd_closed_form_for_diagonal_gaussians():
    # FD = ||mu1 - mu2||^2 + sum_i (s1_i + s2_i - 2 sqrt(s1_i s2_i)) for diagonal covariances s1, s2
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, -0.5])
    var1, var2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 0.25, 0.5])
    expected = ((mu1 - mu2) ** 2).sum() + (var1 + var2 - 2 * np.sqrt(var1 * var2)).sum()
    exact = frechet_distance_from_stats(mu1, np.diag(var1), mu2, np.diag(var2))
    assert exact == pytest.approx(expected, rel=1e-12)
    # from samples: the Gaussian fit converges to the same number
    a = gaussian(200_000, mu1, np.sqrt(var1), 1)
    b = gaussian(200_000, mu2, np.sqrt(var2), 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def test_fd_of_shifted_and_scaled_copies():
    x = gaussian(5000, np.zeros(8), np.ones(8), 3)
    shift = np.full(8, 0.5)
    # pure shift: only the mean term changes (covariances are identical)
    assert frechet_distance(x, x + shift) == pytest.approx((shift ** 2).sum(), rel=1e-9)
    # scaling by s: sigma2 = s^2 sigma1, so the trace term is (1 - s)^2 tr(sigma1)
    s = 2.0
    _, cov = gaussian_stats(x)
    assert frechet_distance(x, s * x) == pytest.approx(((1 - s) ** 2) * (np.trace(cov) + (x.mean(0) ** 2).sum()),
                                                        rel=1e-9)


def test_fd_matches_scipy_sqrtm_on_full_covariances():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = np.random.default_rng(4)
    a, b = g.standard_normal((12, 12)), g.standard_normal((12, 12))
    s1, s2 = a @ a.T, b @ b.T + 0.1 * np.eye(12)
    mu1, mu2 = g.standard_normal(12), g.standard_normal(12)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy_linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(frechet_distance_from_stats(mu2, s2, mu1, s1))


def test_fd_is_finite_with_fewer_samples_than_dimensions():
    a, b = gaussian(20, np.zeros(64), np.ones(64), 5), gaussian(20, np.ones(64), np.ones(64), 6)
    fd = frechet_distance(a, b)
    assert math.isfinite(fd) and fd > 0


def test_fd_rejects_mismatched_dims():
    with pytest.raises(ValueError, match="dimensions"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


def test_precision_recall_identical_sets_are_one():
    x = gaussian(300, np.zeros(10), np.ones(10), 7)
    assert precision_recall(x, x, k=3) == (1.0, 1.0)


def test_precision_recall_far_disjoint_sets_are_zero():
    x = gaussian(300, np.zeros(10), np.ones(10), 8)
    y = gaussian(300, np.full(10, 100.0), np.ones(10), 9)
    assert precision_recall(x, y, k=3) == (0.0, 0.0)


def test_precision_recall_mode_collapse():
    # generated = a tight cluster at one real mode: high precision, low recall
    g = np.random.default_rng(10)
    real = np.concatenate([g.standard_normal((150, 2)), g.standard_normal((150, 2)) + 20])
    fake = 0.1 * g.standard_normal((300, 2))
    precision, recall = precision_recall(real, fake, k=3)
    assert precision > 0.95 and recall < 0.55


def test_density_coverage_extremes_and_outlier_robustness():
    g = np.random.default_rng(13)
    real, same = g.standard_normal((2000, 4)), g.standard_normal((2000, 4))
    density, coverage = density_coverage(real, same, k=5)
    assert density == pytest.approx(1.0, abs=0.1) and coverage > 0.95      # E[density] = 1 for equal laws
    assert density_coverage(real, real + 100.0) == (0.0, 0.0)
    # one far real outlier has a huge k-NN ball: precision counts fakes inside it, density barely does
    real = np.concatenate([g.standard_normal((200, 2)), [[20.0, 20.0]]])   # its 3-NN ball has radius ~27
    fake = 10.0 + 0.5 * g.standard_normal((100, 2))                        # far from every other real point
    assert precision_recall(real, fake, k=3)[0] == 1.0
    assert density_coverage(real, fake, k=3) == (pytest.approx(1 / 3), pytest.approx(1 / 201))


def test_knn_radii_exclude_the_point_itself():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(x, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(x, k=2).tolist() == [3.0, 2.0, 3.0, 6.0]


def test_class_accuracy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    assert class_accuracy(logits, torch.tensor([0, 1, 1, 1])) == 0.75


def test_split_halves_are_disjoint_and_stratified():
    labels = torch.tensor([0] * 7 + [1] * 9 + [2] * 5)
    a, b = split_halves(len(labels), labels, seed=0)
    assert sorted(torch.cat([a, b]).tolist()) == list(range(len(labels)))
    assert abs(len(a) - len(b)) <= 1
    for c in range(3):
        assert abs(int((labels[a] == c).sum()) - int((labels[b] == c).sum())) <= 1
    assert not torch.equal(split_halves(len(labels), labels, seed=1)[0], a)


def test_fd_halves_is_positive_and_shrinks_with_more_samples():
    small = fd_halves(gaussian(100, np.zeros(8), np.ones(8), 11))
    large = fd_halves(gaussian(10_000, np.zeros(8), np.ones(8), 12))
    assert 0 < large < small  # the sample-size bias, which is why FDs are compared at equal sizes


def test_repeat_over_seeds_mean_and_std():
    out = repeat_over_seeds(lambda s: {"m": float(s), "c": 1.0}, [1, 2, 3])
    assert out["m"] == 2.0 and out["m_std"] == pytest.approx(1.0)
    assert out["c_std"] == 0.0 and [r["seed"] for r in out["per_seed"]] == [1, 2, 3]
    assert repeat_over_seeds(lambda s: {"m": 5.0}, [0])["m_std"] == 0.0
