"""The drift loss (Drift-AR Eq. 8) as in "Generative Modeling via Drifting", plus collapse monitors.

Follows docs/method.md "The drifting recipe" (written from it) and "Drift loss (Eq. 8)":

- P independent drift problems. Each problem p has a generated set X_p (G samples of ONE condition,
  different noise), positives Y+_p (real samples of that condition) and optional extra negatives
  Y-_p. The negatives are [X_p itself (self-masked), Y-_p]: the CURRENT generated set, never a stale
  bank ("The drifting recipe", anti-symmetry; issue C4).
- Each feature LOCATION is its own problem ("The drifting recipe"): for an image-level decoder, reshape
  [B, G, L, S] -> [B*L, G, S] with :func:`location_problems`, so different images are compared at
  the same position. The official Drift-AR code uses the L tokens of one image as the set, which
  makes the loss invariant to permuting the image's tokens (issue C1); this layout is not.

Mechanics ("The drifting recipe", steps 1-5), all fp32 and under stop-gradient except the final MSE:

    d_ij   = ||x_i - y_j||                      y in [X, Y-, Y+]                    [P, G, T]
    s      = weighted mean of d over distinct pairs (one scalar for the batch), >= 1e-3
    x~, y~ = x / (s / sqrt(S)), y / (s / sqrt(S))   (mean distance becomes sqrt(S))
    l_ij   = -(d_ij / s + 100 [y_j is x_i]) / R      for R in (0.02, 0.05, 0.2)
    a_ij   = sqrt(softmax_j(l)_ij * softmax_i(l)_ij) * w_j         (double softmax)
    V_R(x_i) = sum_j a+_ij S-_i (y~+_j - x~_i) - sum_k a-_ik S+_i (y~-_k - x~_i)
             = sum_jk a+_ij a-_ik (y~+_j - y~-_k)       (product form)
    goal   = x~ + sum_R V_R / rms(V_R)              (rms over the whole batch)
    L      = mean_p w_p mean_{i,s} (x~_live - sg(goal))^2

Because the coefficients of positives and negatives sum to zero, V_{p,q} = -V_{q,p} and V = 0
when the positive and negative sets coincide (:func:`drift_field` with ``self_negatives=False``
exposes this form for tests). The loss value is uninformative (about 7-9 by construction: three
unit-RMS forces); watch :class:`DriftMonitors` instead (docs/method.md "The drift head probe"): a
falling global scale s was the early sign of collapse, and the per-problem spread of the G samples
over the positives' spread should stay near 1.

Deliberate detail: s averages over DISTINCT pairs (the zero self-distances of X are excluded), and
problem weights (e.g. MAR's loss mask) weight s, the RMS and the loss, so masked problems do not
move the normalisation. The drifting code also floors the affinity product at 1e-6; the recipe we
follow (docs/method.md "The drifting recipe") does not, and neither do we.
"""
from __future__ import annotations

from driftar_core.method.configs import TEMPERATURES  # noqa: F401  (one source of defaults)

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

SELF_MASK = 100.0                  # added to the normalised self-distance ("The drifting recipe" step 3)
SCALE_FLOOR = 1e-3                 # global distance scale s >= 1e-3 (step 2)
RMS_FLOOR = 1e-8                   # per-temperature force RMS floor (step 4)
SQ_DIST_FLOOR = 1e-8               # distances clamped away from 0 (step 1)


# -------------------------------------------------------------------------------------------------
# Layout helper
# -------------------------------------------------------------------------------------------------


def location_problems(x: Tensor) -> Tensor:
    """[B, G, L, S] (B conditions, G samples each, L feature locations) -> [B*L, G, S] drift problems."""
    return rearrange(x, "b g l s -> (b l) g s")


def pairwise_distance(x: Tensor, y: Tensor) -> Tensor:
    """x [P, G, S], y [P, T, S] -> Euclidean distances [P, G, T], clamped away from 0."""
    sq = (x * x).sum(-1)[:, :, None] + (y * y).sum(-1)[:, None, :] - 2.0 * x @ y.transpose(1, 2)
    return sq.clamp_min(SQ_DIST_FLOOR).sqrt()


def _weighted_mean(v: Tensor, w: Tensor) -> Tensor:
    """v [P], w [P] -> sum(w v) / sum(w) (0 when all weights are 0)."""
    return (v * w).sum() / w.sum().clamp_min(1e-12)


# -------------------------------------------------------------------------------------------------
# The field
# -------------------------------------------------------------------------------------------------


@dataclass
class DriftField:
    """The drifting field of one feature space, in normalised coordinates (units of s / sqrt(S)).

    V: [P, G, S] sum over temperatures of V_R / rms(V_R), the step the goal takes.
    V_R: per-temperature raw fields [P, G, S] (before RMS normalisation).
    rms: [len(temperatures)] RMS of each V_R over the batch (floored at 1e-8).
    scale: s, the weighted mean pairwise distance in the raw feature units (floored at 1e-3).
    unit: s / sqrt(S), what coordinates are divided by.
    x_scaled: [P, G, S] x / unit.
    """

    V: Tensor
    V_R: list[Tensor]
    rms: Tensor
    scale: Tensor
    unit: Tensor
    x_scaled: Tensor


@torch.no_grad()
def drift_field(x: Tensor, pos: Tensor, neg: Tensor | None = None, *, pos_weight: Tensor | None = None,
                neg_weight: Tensor | None = None, weight: Tensor | None = None,
                temperatures: tuple[float, ...] = TEMPERATURES, self_negatives: bool = True) -> DriftField:
    """The drifting field V_{p,q}(x) of docs/method.md "The drifting recipe" for P problems at once (no gradient, fp32).

    x: [P, G, S] generated samples; pos: [P, C_p, S] positives (Y+); neg: [P, C_n, S] extra negatives.
    pos_weight [P, C_p], neg_weight [P, C_n]: target weights (multiply the affinities); weight [P]:
    problem weights (s, the RMS and the loss). self_negatives: the generated set X is a negative of
    itself with its own point masked (the training case); False leaves only ``neg`` as negatives,
    which is the product form V = sum a+ a- (y+ - y-) whose anti-symmetry the tests check.
    """
    x, pos = x.detach().float(), pos.detach().float()
    P, G, S = x.shape
    neg = x.new_zeros(P, 0, S) if neg is None else neg.detach().float()
    ones = lambda n: x.new_ones(P, n)                                           # noqa: E731
    w_pos = ones(pos.shape[1]) if pos_weight is None else pos_weight.float()
    w_neg = ones(neg.shape[1]) if neg_weight is None else neg_weight.float()
    w_prob = x.new_ones(P) if weight is None else weight.float()

    negs, w_negs = [neg], [w_neg]
    if self_negatives:
        negs, w_negs = [x, neg], [ones(G), w_neg]
    y = torch.cat(negs + [pos], dim=1)                                          # [P, T, S] = [X, Y-, Y+]
    w_t = torch.cat(w_negs + [w_pos], dim=1)                                    # [P, T]
    n_neg = y.shape[1] - pos.shape[1]                                           # negatives come first
    self_pair = torch.zeros(G, y.shape[1], dtype=torch.bool, device=x.device)   # [G, T]
    if self_negatives:
        self_pair[:, :G] = torch.eye(G, dtype=torch.bool, device=x.device)

    # 1-2. distances and the global scale s (weighted mean over distinct pairs)
    d = pairwise_distance(x, y)                                                 # [P, G, T]
    pair_w = w_prob[:, None, None] * w_t[:, None, :] * (~self_pair)             # [P, G, T]
    scale = ((d * pair_w).sum() / pair_w.sum().clamp_min(1e-12)).clamp_min(SCALE_FLOOR)
    unit = scale / math.sqrt(S)
    x_n, y_n = x / unit, y / unit                                               # [P, G, S], [P, T, S]
    d_n = d / scale + SELF_MASK * self_pair                                     # [P, G, T], mean ~1

    # 3-4. per-temperature double-softmax fields, each normalised to unit RMS over the batch
    V = torch.zeros_like(x_n)
    V_R, rms = [], []
    for R in temperatures:
        logits = -d_n / R                                                       # [P, G, T]
        a = (logits.softmax(-1) * logits.softmax(-2)).sqrt() * w_t[:, None, :]  # over targets x over generated
        a_neg, a_pos = a[..., :n_neg], a[..., n_neg:]                           # [P, G, C_neg], [P, G, C_p]
        S_neg = a_neg.sum(-1, keepdim=True)                                     # [P, G, 1]
        S_pos = a_pos.sum(-1, keepdim=True)                                     # [P, G, 1]
        coef = torch.cat([-a_neg * S_pos, a_pos * S_neg], dim=-1)               # [P, G, T], rows sum to 0
        v = coef @ y_n - coef.sum(-1, keepdim=True) * x_n                       # [P, G, S]
        r = _weighted_mean(v.pow(2).mean((1, 2)), w_prob).sqrt().clamp_min(RMS_FLOOR)
        V = V + v / r
        V_R.append(v)
        rms.append(r)
    return DriftField(V=V, V_R=V_R, rms=torch.stack(rms), scale=scale, unit=unit, x_scaled=x_n)


# -------------------------------------------------------------------------------------------------
# Collapse monitors
# -------------------------------------------------------------------------------------------------


@dataclass
class DriftMonitors:
    """Collapse monitors of one feature space (docs/method.md "The drift head probe"); 0-dim tensors.

    scale: the drift loss's global distance scale s (raw feature units); a steady fall is the early
        sign of collapse.
    gen_spread: per-problem RMS standard deviation over the G generated samples, averaged over problems.
    pos_spread: the same over the positives; NaN when a problem has fewer than 2 positives.
    spread_ratio: gen_spread / pos_spread (about 1 when healthy, -> 0 on collapse); NaN as above.
    """

    scale: Tensor
    gen_spread: Tensor
    pos_spread: Tensor
    spread_ratio: Tensor

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": float(getattr(self, k)) for k in ("scale", "gen_spread", "pos_spread", "spread_ratio")}


def sample_spread(samples: Tensor, weight: Tensor | None = None) -> Tensor:
    """samples [P, G, S] -> weighted mean over problems of sqrt(mean_s var_G) (0-dim; NaN if G < 2)."""
    if samples.shape[1] < 2:
        return samples.new_tensor(float("nan"))
    per_problem = samples.float().var(dim=1).mean(-1).sqrt()                    # [P]
    w = samples.new_ones(samples.shape[0]) if weight is None else weight.float()
    return _weighted_mean(per_problem, w)


@torch.no_grad()
def drift_monitors(x: Tensor, pos: Tensor, scale: Tensor, weight: Tensor | None = None) -> DriftMonitors:
    """x [P, G, S], pos [P, C_p, S], s from :func:`drift_field` -> :class:`DriftMonitors`."""
    gen = sample_spread(x.detach(), weight)
    ref = sample_spread(pos.detach(), weight)
    return DriftMonitors(scale=scale.detach(), gen_spread=gen, pos_spread=ref, spread_ratio=gen / ref)


# -------------------------------------------------------------------------------------------------
# The loss
# -------------------------------------------------------------------------------------------------


@dataclass
class DriftLoss:
    """loss: scalar (gradient flows only into x); field: the :class:`DriftField`; monitors."""

    loss: Tensor
    field: DriftField
    monitors: DriftMonitors


def drift_loss(x: Tensor, pos: Tensor, neg: Tensor | None = None, *, pos_weight: Tensor | None = None,
               neg_weight: Tensor | None = None, weight: Tensor | None = None,
               temperatures: tuple[float, ...] = TEMPERATURES) -> DriftLoss:
    """Eq. 8 for P problems: x [P, G, S] (live), pos [P, C_p, S], neg [P, C_n, S] -> :class:`DriftLoss`.

    Weights as in :func:`drift_field`. The loss is the problem-weighted mean over problems of
    mean_{G,S} (x / unit - sg(goal))^2, in fp32. Positives, negatives and the field carry no gradient.
    """
    if x.dim() != 3 or pos.dim() != 3 or pos.shape[0] != x.shape[0] or pos.shape[2] != x.shape[2]:
        raise ValueError(f"drift_loss expects x [P, G, S] and pos [P, C_p, S], got {list(x.shape)} and {list(pos.shape)}")
    field = drift_field(x, pos, neg, pos_weight=pos_weight, neg_weight=neg_weight, weight=weight,
                        temperatures=temperatures, self_negatives=True)
    goal = field.x_scaled + field.V                                             # [P, G, S], no grad
    x_live = x.float() / field.unit                                             # [P, G, S]
    per_problem = (x_live - goal).pow(2).mean((1, 2))                           # [P]
    w = x_live.new_ones(x.shape[0]) if weight is None else weight.float()
    loss = (per_problem * w).sum() / w.sum().clamp_min(1e-12)
    return DriftLoss(loss=loss, field=field, monitors=drift_monitors(x, pos, field.scale, weight))
