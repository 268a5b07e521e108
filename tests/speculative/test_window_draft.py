"""The feature-level window draft (driftar_core.method.window_draft) in the speculative sampler, and
its distillation recipe (driftar_core.method.window_draft_train), on a tiny random NextStep-1."""
from __future__ import annotations

import math

import pytest
import torch

from driftar_core.interfaces import StepOutput
from driftar_core.sampling import cfg_at, draw_noise, generate
from driftar_core.speculative import head_tokens, speculative_generate

LABELS = torch.tensor([1, 7, 4])
L = 16


@pytest.fixture
def bundle(make_bundle):
    return make_bundle(seed=0, dtype=torch.float64, head_type="drift", drift_ar={
        "decoder": {"width": 16, "depth": 1}, "draft": {"kind": "window", "window": 3, "width": 32, "depth": 1}})


@pytest.fixture
def noise(bundle):
    return draw_noise(bundle.head, len(LABELS), L, torch.Generator().manual_seed(0), "cpu").double()


class OracleFeatureDraft:
    """Positive control in the feature-level protocol: proposes the TARGET's own features, by running a
    copy of the target (and the head) ahead; observe() re-derives the committed tokens from z, E, eps."""

    feature_level = True

    def __init__(self, bundle, cfg: float):
        self.bundle, self.cfg = bundle, cfg

    def _cfgs(self, n, m):
        return [cfg_at(self.cfg, (p + 1) / L, "constant") for p in range(n, n + m)]

    def _tokens(self, out, noise, n):
        return head_tokens(self.bundle.head, out, noise[:, :, None], self._cfgs(n, noise.shape[1]),
                           self.bundle.config.sampling.temperature)

    def new_state(self, cond, num_iter=None, cfg=False, generator=None):
        return self.bundle.backbone.new_state(cond, num_iter=num_iter, cfg=cfg)

    def observe(self, state, out, noise):
        n, target = state.n, self.bundle.backbone
        x = self._tokens(out, noise, n)
        pos = torch.arange(n, n + x.shape[1])[None].expand(len(x), -1)
        target.commit(state, pos, x)

    def propose(self, state, noise):
        target, zs, es, n = self.bundle.backbone, [], [], state.n
        for m in range(noise.shape[1]):
            out = target.step(state, torch.full((noise.shape[0], 1), n + m))
            zs.append(out.z), es.append(out.entropy)
            target.commit(state, torch.full((noise.shape[0], 1), n + m), self._tokens(out, noise[:, m:m + 1], n + m))
        target.rollback(state, noise.shape[1])
        return StepOutput(z=torch.cat(zs, 1), entropy=torch.cat(es, 1))


@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_zero_tolerance_reproduces_sequential_decoding(bundle, noise, cfg):
    ref = generate(bundle, LABELS, cfg=cfg, noise=noise)
    out = speculative_generate(bundle, LABELS, draft_len=3, tau0=0.0, kappa=0.0, cfg=cfg, noise=noise)
    torch.testing.assert_close(out.tokens, ref.tokens, atol=1e-10, rtol=0)
    assert out.counts.backbone_passes == out.counts.extra["rounds"] == L - out.counts.extra["accepted"]


def test_round_accounting_and_window_rows(bundle, noise):
    rounds = []

    def audit(info):
        assert info.target_state.n == info.committed == info.start + info.accepted + 1
        assert info.target_state.cache_len == info.committed                   # target cache == committed
        assert info.draft_state.n == info.committed                            # the window holds target rows
        rounds.append(info)

    out = speculative_generate(bundle, LABELS, draft_len=3, tau0=0.5, kappa=0.5, noise=noise, on_round=audit)
    c = out.counts
    assert rounds[0].drafted == 0                                              # round 0 seeds the window
    assert sum(r.accepted + 1 for r in rounds) == L
    assert c.backbone_passes == len(rounds)
    assert c.draft_passes == sum(r.drafted for r in rounds)
    assert c.head_nfe == c.backbone_passes + sum(r.drafted > 0 for r in rounds)  # ONE head call per drafting round
    # the rows the window holds are the target's own features of the committed sequence
    draft, state = bundle.draft, rounds[-1].draft_state
    t_state = bundle.backbone.new_state(LABELS, num_iter=L, cfg=True)
    feats = bundle.backbone.verify(t_state, out.tokens[:, :L - 1])
    want = draft.rows_from(feats, noise[:, :, 0], cfg=True)
    torch.testing.assert_close(state.rows[:, draft.window - 1:], want, atol=1e-9, rtol=0)
    assert not state.rows[:, :draft.window - 1].any()                          # before position 0: zeros


def test_oracle_draft_accepts_every_draft(bundle, noise):
    ref = generate(bundle, LABELS, cfg=2.0, noise=noise)
    out = speculative_generate(bundle, LABELS, draft=OracleFeatureDraft(bundle, 2.0), draft_len=3, tau0=1e-9,
                               cfg=2.0, noise=noise)
    assert out.counts.extra["acceptance_rate"] == 1.0
    assert out.counts.backbone_passes == 1 + math.ceil((L - 1) / 4)           # round 0, then k + 1 = 4 per pass
    torch.testing.assert_close(out.tokens, ref.tokens, atol=1e-8, rtol=0)
    shuffled = speculative_generate(bundle, LABELS, draft=OracleFeatureDraft(bundle, 2.0), draft_len=3, tau0=1e-3,
                                    cfg=2.0, noise=noise, negative_control=True)
    assert shuffled.counts.extra["acceptance_rate_per_sample"] < 0.1           # negative control


def test_propose_is_the_network_run_on_its_own_outputs(bundle, noise):
    draft, B = bundle.draft, len(LABELS)
    state = draft.new_state(LABELS, num_iter=L, cfg=True)
    z, e = torch.randn(2 * B, 2, 32, dtype=torch.float64), torch.rand(2 * B, 2, dtype=torch.float64)
    draft.observe(state, StepOutput(z=z, entropy=e), noise[:, :2, 0])
    out = draft.propose(state, noise[:, 2:5, 0])                               # positions 2, 3, 4
    assert out.z.shape == (2 * B, 3, 32) and out.entropy.shape == (2 * B, 3)
    window = state.rows[:, 2 - 1:2 - 1 + draft.window]                        # positions -1, 0, 1
    for m in range(3):
        pred = draft(window, torch.full((B,), 2 + m))
        torch.testing.assert_close(out.z[:B, m], pred[:, :32])
        torch.testing.assert_close(out.z[B:, m], pred[:, 32:64])
        torch.testing.assert_close(out.entropy[:B, m], pred[:, 64])
        window = torch.cat([window[:, 1:], torch.cat([pred, noise[:, 2 + m, 0]], -1)[:, None]], 1)
    assert state.n == 2                                                        # proposing changes nothing
    # without CFG the uncond half of a row repeats the cond half
    plain = draft.new_state(LABELS, num_iter=L, cfg=False)
    draft.observe(plain, StepOutput(z=z[:B], entropy=e[:B]), noise[:, :2, 0])
    row = plain.rows[:, draft.window - 1]
    torch.testing.assert_close(row[:, :32], row[:, 32:64])
    assert draft.propose(plain, noise[:, 2:4, 0]).z.shape == (B, 2, 32)


def test_propose_needs_an_observed_position(bundle, noise):
    state = bundle.draft.new_state(LABELS, num_iter=L, cfg=True)
    with pytest.raises(ValueError, match="observe the first target step"):
        bundle.draft.propose(state, noise[:, :2, 0])


def test_distillation_rollouts_and_loss(bundle):
    from driftar_core.method.window_draft_train import sample_rollouts, unrolled_loss
    buf = sample_rollouts(bundle, 5, 2, torch.Generator().manual_seed(0), say=lambda m: None)
    w = bundle.draft.window
    assert buf["rows"].shape == (5, w - 1 + L, bundle.draft.row_dim) and buf["tokens"].shape == (5, L, 4)
    # each rollout is the sequential sampler's output, and its rows carry the noise that made it
    labels = torch.arange(5) % 10
    noise = buf["rows"][:, w - 1:, -4:][:, :, None]
    torch.testing.assert_close(generate(bundle, labels, noise=noise).tokens, buf["tokens"], atol=1e-10, rtol=0)

    cfg = bundle.draft.config
    opt = torch.optim.Adam(bundle.draft.parameters(), lr=3e-3)
    start = torch.tensor([0, 3, 7, 12, 14])
    kwargs = dict(unroll=3, cfg_table=torch.full((L,), 2.0, dtype=torch.float64), temperature=1.0,
                  tolerance=lambda e: 0.1 + 0.0 * e, config=cfg)
    losses = []
    for _ in range(30):
        loss, metrics = unrolled_loss(bundle.draft, bundle.head, buf["rows"], buf["tokens"], start, **kwargs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    assert set(metrics) >= {"draft_reg", "draft_ent", "draft_tok", "accept_1", "tokens_per_round"}
    assert 1.0 <= float(metrics["tokens_per_round"]) <= 4.0


def test_draft_recipe_needs_a_window_draft_and_a_trained_model(make_bundle):
    from driftar_core.method.window_draft_train import WindowDraftMethodConfig, WindowDraftObjective
    layer = make_bundle(seed=0, head_type="drift", drift_ar={"decoder": {"width": 16, "depth": 1},
                                                             "draft": {"kind": "layer"}})
    with pytest.raises(ValueError, match="drift_ar.draft.kind is 'window'"):
        WindowDraftObjective(layer, WindowDraftMethodConfig(), seed=0)


def test_early_stop_shortens_what_is_verified_and_counts_every_draft_pass(bundle, noise):
    rounds = []
    out = speculative_generate(bundle, LABELS, draft_len=3, tau0=0.5, kappa=0.5, noise=noise, early_stop_gamma=10.0,
                               entropy_ema_init=1.0, on_round=rounds.append)  # every draft looks over-confident
    c = out.counts
    assert c.extra["early_stops"] > 0 and all(r.drafted <= 1 for r in rounds)  # stopped after the first draft
    ran = sum(min(3, L - 1 - r.start) for r in rounds if r.start)            # the window draft proposed k each round
    assert c.draft_passes == ran > c.extra["drafted"]
