"""Speculative decoding (driftar_core.speculative) on a tiny random NextStep-1: the invariants of
docs/method.md "Invariants" (zero tolerance = sequential decoding, pass accounting, cache lengths,
positive and negative controls)."""
from __future__ import annotations

import math

import pytest
import torch

from driftar_core.sampling import draw_noise, generate
from driftar_core.speculative import speculative_generate
from driftar_nextstep1.build import build_layer_draft

LABELS = torch.tensor([1, 7, 4])
L = 16


@pytest.fixture
def setup(make_bundle):
    """(bundle in float64, drafts by kind, fixed noise)."""
    bundle = make_bundle(seed=0, dtype=torch.float64)
    drafts = {"copy": build_layer_draft(bundle.backbone, 3),              # exact copy: positive control
              "truncated": build_layer_draft(bundle.backbone, 1),         # the target's first layer
              "independent": make_bundle(seed=1, dtype=torch.float64).backbone}  # another initialisation
    noise = draw_noise(bundle.head, len(LABELS), L, torch.Generator().manual_seed(0), "cpu").double()
    return bundle, drafts, noise


@pytest.mark.parametrize("kind", ["copy", "truncated", "independent"])
@pytest.mark.parametrize("cfg,schedule", [(1.0, "constant"), (2.0, "linear")])
def test_zero_tolerance_reproduces_sequential_decoding(setup, kind, cfg, schedule):
    bundle, drafts, noise = setup
    ref = generate(bundle, LABELS, cfg=cfg, cfg_schedule=schedule, noise=noise)
    out = speculative_generate(bundle, LABELS, draft=drafts[kind], draft_len=3, tau0=0.0, kappa=0.0,
                               cfg=cfg, cfg_schedule=schedule, noise=noise)
    torch.testing.assert_close(out.tokens, ref.tokens, atol=1e-10, rtol=0)
    assert out.counts.backbone_passes == out.counts.extra["rounds"] == L - out.counts.extra["accepted"]


def test_zero_tolerance_with_use_norm(make_bundle):
    bundle = make_bundle(seed=0, dtype=torch.float64, use_norm=True)
    noise = draw_noise(bundle.head, len(LABELS), L, torch.Generator().manual_seed(0), "cpu").double()
    ref = generate(bundle, LABELS, noise=noise)
    out = speculative_generate(bundle, LABELS, draft=build_layer_draft(bundle.backbone, 1), draft_len=3, noise=noise)
    torch.testing.assert_close(out.tokens, ref.tokens, atol=1e-10, rtol=0)


def test_round_accounting_and_cache_lengths(setup):
    bundle, drafts, noise = setup
    rounds = []

    def audit(info):
        assert info.target_state.n == info.committed == info.start + info.accepted + 1
        assert info.target_state.cache_len == info.committed                   # target cache == committed
        assert info.draft_state.n == info.committed and info.draft_state.cache_len <= info.committed
        torch.testing.assert_close(info.draft_state.tokens, info.target_state.tokens)
        rounds.append(info)

    out = speculative_generate(bundle, LABELS, draft=drafts["truncated"], draft_len=3, tau0=0.5, kappa=0.2,
                               noise=noise, on_round=audit)
    c = out.counts
    assert sum(r.accepted + 1 for r in rounds) == L                             # tokens = sum(a + 1)
    assert c.backbone_passes == len(rounds) == c.extra["rounds"]                # one target pass per round
    assert c.draft_passes == sum(r.drafted for r in rounds) == c.extra["drafted"]
    assert c.head_nfe == (c.draft_passes + c.backbone_passes) * bundle.head.nfe
    assert c.extra["acceptance_rate"] == sum(r.accepted for r in rounds) / sum(r.drafted for r in rounds)
    assert [r.start for r in rounds] == [0] + [r.committed for r in rounds[:-1]]


def test_positive_control_exact_copy_accepts_every_draft(setup):
    bundle, drafts, noise = setup
    ref = generate(bundle, LABELS, noise=noise)
    out = speculative_generate(bundle, LABELS, draft=drafts["copy"], draft_len=3, tau0=1e-9, noise=noise)
    assert out.counts.extra["acceptance_rate"] == 1.0
    assert out.counts.backbone_passes == math.ceil(L / 4)                      # k + 1 = 4 tokens per target pass
    torch.testing.assert_close(out.tokens, ref.tokens, atol=1e-8, rtol=0)


def test_negative_control_collapses_acceptance(setup):
    bundle, drafts, noise = setup
    kwargs = dict(draft=drafts["copy"], draft_len=3, tau0=0.05, noise=noise)
    assert speculative_generate(bundle, LABELS, **kwargs).counts.extra["acceptance_rate"] == 1.0
    shuffled = speculative_generate(bundle, LABELS, negative_control=True, **kwargs)
    assert shuffled.counts.extra["acceptance_rate_per_sample"] < 0.1
    assert shuffled.counts.backbone_passes > 0.9 * L


def eq6_sigma(e: torch.Tensor) -> torch.Tensor:
    """Drift-AR Eq. 6 with the official defaults (sigma_max 0.5, tau 2, E_max 1), written out here."""
    return 0.5 * (torch.exp(e / 2.0) - 1.0) / (math.exp(0.5) - 1.0)


@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_tolerance_scales_with_target_entropy(setup, cfg):
    """Catches: a tolerance that ignores E (tau0 + kappa * const), reads the E of the wrong position, of the
    CFG's unconditional half or of the draft, uses another sigma than Eq. 6, or an acceptance decision that
    does not use the tolerance it reports.

    Every drafted position whose context is committed (the accepted prefix and the first rejected draft)
    must have tolerance tau0 + kappa * sigma(E) with E the TARGET's entropy there, recomputed independently
    by one teacher-forced target pass over the final tokens. The target's queries are scaled up so that its
    attention is peaked and E varies over positions (0 at the first, ~0.7-0.99 later) instead of ~1."""
    bundle, drafts, noise = setup
    with torch.no_grad():
        for name, p in bundle.backbone.named_parameters():
            if "q_proj" in name:
                p.mul_(8.0)
    assert float(eq6_sigma(torch.tensor(0.5))) == pytest.approx(0.219, abs=1e-3)   # docs/method.md's value
    tau0, kappa, rounds = 0.05, 2.0, []
    out = speculative_generate(bundle, LABELS, draft=drafts["independent"], draft_len=3, tau0=tau0, kappa=kappa,
                               noise=noise, cfg=cfg, on_round=rounds.append)
    state = bundle.backbone.new_state(LABELS, num_iter=L)                   # conditional rows only
    e_target = bundle.backbone.verify(state, out.tokens[:, :L - 1]).entropy.float()   # [B, L]: E at 0 .. L-1
    es, tols = [], []
    for info in rounds:
        # the decision uses the reported tolerance: the longest prefix with distance <= tolerance
        within = (info.distance <= info.tolerance).long().cumprod(1).sum(1)
        assert torch.equal(info.accepted_per_sample, within) and info.accepted == int(within.min())
        for m in range(min(info.accepted + 1, info.drafted)):              # context of start + m is committed
            e = e_target[:, info.start + m]
            torch.testing.assert_close(info.tolerance[:, m], tau0 + kappa * eq6_sigma(e), rtol=1e-5, atol=1e-6)
            es.append(e)
            tols.append(info.tolerance[:, m])
    es, tols = torch.cat(es), torch.cat(tols)
    assert len(es) >= 30 and float(es.max() - es.min()) > 0.9 and float(es[es > 0].min()) < 0.9
    order = es.argsort()
    assert bool((tols[order].diff() >= -1e-7).all())                       # tolerance grows with E
    assert float(tols.max() - tols.min()) > 0.8                            # ... from tau0 at E = 0 up to ~1.0
    assert any(info.accepted > 0 for info in rounds) and any(info.accepted < info.drafted for info in rounds)


def test_huge_kappa_accepts_every_draft_past_the_first_position(setup):
    bundle, drafts, noise = setup
    # tau0 = 0: sigma(E = 0) = 0 at position 0 (z_1 sees one key), so only that draft can fail;
    # every later position has E > 0 and a huge kappa accepts it
    out = speculative_generate(bundle, LABELS, draft=drafts["independent"], draft_len=3, tau0=0.0, kappa=1e6,
                               noise=noise, cfg=1.0)
    assert out.counts.backbone_passes == 1 + math.ceil((L - 1) / 4)
    assert not torch.allclose(out.tokens, generate(bundle, LABELS, noise=noise, cfg=1.0).tokens)  # lossy


def test_entropy_early_stop_shortens_drafts(setup):
    bundle, drafts, noise = setup
    out = speculative_generate(bundle, LABELS, draft=drafts["copy"], draft_len=3, tau0=1e-9, noise=noise,
                               early_stop_gamma=10.0, entropy_ema_init=1.0)  # every draft looks over-confident
    assert out.counts.extra["early_stops"] > 0
    assert out.counts.draft_passes == out.counts.extra["rounds"] == L // 2     # one draft + one bonus per round


def test_needs_a_draft(setup):
    bundle, _, _ = setup
    with pytest.raises(ValueError, match="draft"):
        speculative_generate(bundle, LABELS)
