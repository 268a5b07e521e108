"""The conformance kit: what a backbone plugin must satisfy, as checks a plugin author runs on their model.

    # tests/test_my_backbone.py of your plugin
    import pytest
    from driftar_core.factory import create_model
    from driftar_core.testing import BackboneConformance

    class TestMyBackbone(BackboneConformance):
        @pytest.fixture(params=["mine_tiny", "mine_tiny_drift"])
        def bundle(self, request):
            return create_model(request.param)

Every check goes through the declared contracts only (``driftar_core.interfaces``, ``BackboneSpec.drift``,
``ModelBundle.sampler``); docs/plugins.md ("Testing your backbone") says what each one proves. The
functions can be called on their own too (``check_generate(bundle)``). The repo's own MAR and NextStep-1
suites run this class over their tiny presets (tests/conformance).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from driftar_core.interfaces import (ARBackbone, FeatureDraft, SpeculativeBackbone, TokenDraft, Tokenizer,
                                     TokenHead, TrainableDraft)

BATCH = 2
ATOL = 1e-5          # float32 forwards of one row vs a batch of rows
EXACT = 1e-9         # float64: speculative decoding at zero tolerance must be sequential decoding


def _labels(bundle: Any, n: int = BATCH) -> torch.Tensor:
    return (torch.arange(n) * 3 % bundle.config.class_num).to(bundle.device)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -------------------------------------------------------------------------------------------------
# Checks (each raises AssertionError with a message naming the broken contract)
# -------------------------------------------------------------------------------------------------


def check_protocols(bundle: Any) -> None:
    """The parts satisfy their protocols; a draft is a TokenDraft, a FeatureDraft or a TrainableDraft."""
    assert isinstance(bundle.tokenizer, Tokenizer), "the tokenizer does not satisfy interfaces.Tokenizer"
    assert isinstance(bundle.backbone, ARBackbone), "the backbone does not satisfy interfaces.ARBackbone"
    assert isinstance(bundle.head, TokenHead), "the head does not satisfy interfaces.TokenHead"
    if bundle.draft is not None:
        assert isinstance(bundle.draft, (TokenDraft, FeatureDraft, TrainableDraft)), \
            "the draft is none of TokenDraft, FeatureDraft, TrainableDraft"
    assert bundle.backbone.token_shape == tuple(bundle.tokenizer.token_shape), \
        "backbone.token_shape differs from the tokenizer's"
    if bundle.sampler.kind == "speculative":
        assert isinstance(bundle.backbone, SpeculativeBackbone) and bundle.draft is not None, \
            "the default sampler is speculative but the backbone cannot verify/rollback or there is no draft"


@torch.no_grad()
def check_plan_and_steps(bundle: Any) -> None:
    """The plan covers every position exactly once; each step gives z [B', n, D] and E [B', n] in [0, 1]."""
    L, c = bundle.tokenizer.token_shape
    labels = _labels(bundle)
    state = bundle.backbone.new_state(labels, num_iter=bundle.config.sampling.num_iter, cfg=False, generator=_gen())
    seen = torch.zeros(BATCH, L, dtype=torch.long)
    for step in bundle.backbone.plan(state):
        out = bundle.backbone.step(state, step.positions)
        n = step.positions.shape[1]
        assert out.z.shape == (BATCH, n, bundle.backbone.z_dim), f"z has shape {tuple(out.z.shape)}"
        if out.entropy is not None:
            assert out.entropy.shape == (BATCH, n), f"E has shape {tuple(out.entropy.shape)}"
            assert float(out.entropy.min()) >= -1e-6 and float(out.entropy.max()) <= 1 + 1e-6, "E outside [0, 1]"
        seen.scatter_add_(1, step.positions.cpu(), torch.ones_like(step.positions.cpu()))
        bundle.backbone.commit(state, step.positions, torch.randn(BATCH, n, c, device=bundle.device))
    assert bool((seen == 1).all()), "the plan does not visit every position exactly once"


@torch.no_grad()
def check_generate(bundle: Any) -> None:
    """The default sampler gives finite images of the tokenizer's shape and counts its passes."""
    from driftar_core.speculative import make_sampler
    out = make_sampler(bundle.sampler)(bundle, _labels(bundle), generator=_gen())
    assert out.images.shape == (BATCH, *bundle.tokenizer.image_shape), f"images {tuple(out.images.shape)}"
    assert bool(torch.isfinite(out.images).all()), "sampling produced NaN or inf"
    assert out.counts.backbone_passes >= 1 and out.counts.head_nfe >= 1, "passes were not counted"


@torch.no_grad()
def check_verify_and_rollback(bundle: Any, prefix: int = 3, k: int = 4, keep: int = 2) -> None:
    """SpeculativeBackbone: one ``verify`` of k drafts = k + 1 sequential steps; ``rollback`` restores the state."""
    bb = bundle.backbone
    L, c = bundle.tokenizer.token_shape
    labels, tokens = _labels(bundle), torch.randn(BATCH, L, c, generator=_gen(1)).to(bundle.device)

    def fresh():
        state = bb.new_state(labels, num_iter=L, cfg=False, generator=_gen())
        return state, bb.plan(state)
    state, plan = fresh()
    z_seq, e_seq = [], []
    for j, step in enumerate(plan[:prefix + k + 1]):                       # the sequential reference
        out = bb.step(state, step.positions)
        z_seq.append(out.z)
        e_seq.append(out.entropy)
        bb.commit(state, step.positions, tokens[:, j:j + 1])
    z_seq = torch.cat(z_seq, 1)
    state, plan = fresh()
    for j, step in enumerate(plan[:prefix]):
        bb.step(state, step.positions)
        bb.commit(state, step.positions, tokens[:, j:j + 1])
    out = bb.verify(state, tokens[:, prefix:prefix + k])
    assert out.z.shape[1] == k + 1, f"verify of {k} drafts gave {out.z.shape[1]} positions, not {k + 1}"
    torch.testing.assert_close(out.z, z_seq[:, prefix:prefix + k + 1], atol=ATOL, rtol=1e-4,
                               msg="verify differs from sequential steps")
    bb.rollback(state, k - keep)                                            # keep the first `keep` drafts
    m = prefix + keep
    bb.commit(state, plan[m].positions, tokens[:, m:m + 1])
    again = bb.step(state, plan[m + 1].positions)
    torch.testing.assert_close(again.z, z_seq[:, m + 1:m + 2], atol=ATOL, rtol=1e-4,
                               msg="a step after rollback differs from the sequential step")


@torch.no_grad()
def check_speculative_exact(bundle: Any, draft_len: int = 3) -> None:
    """At zero tolerance speculative decoding IS sequential decoding (float64), passes = rounds and the
    rounds commit every token: sum over rounds of (accepted + 1) = L."""
    from driftar_core.sampling import draw_noise, generate
    from driftar_core.speculative import speculative_generate
    b = copy.deepcopy(bundle).double()
    L, _ = b.tokenizer.token_shape
    labels = _labels(b)
    noise = draw_noise(b.head, BATCH, L, _gen(2), b.device).double()
    ref = generate(b, labels, noise=noise)
    out = speculative_generate(b, labels, noise=noise, draft_len=draft_len, tau0=0.0, kappa=0.0)
    torch.testing.assert_close(out.tokens, ref.tokens, atol=EXACT, rtol=0,
                               msg="speculative decoding at zero tolerance differs from sequential decoding")
    x = out.counts.extra
    assert out.counts.backbone_passes == x["rounds"], "target passes != rounds"
    assert x["accepted"] + x["rounds"] == L, "the rounds did not commit every token exactly once"


def check_save_load(bundle: Any, directory: Path) -> None:
    """save -> load_bundle gives the same weights, the same declared sampler and the same images."""
    from driftar_core.bundle import load_bundle
    from driftar_core.speculative import make_sampler
    loaded = load_bundle(bundle.save(Path(directory) / "model"))
    a, b = bundle.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "weights differ after a round trip"
    assert loaded.sampler == bundle.sampler, "the declared sampler differs after a round trip"
    with torch.no_grad():
        x = make_sampler(bundle.sampler)(bundle.eval(), _labels(bundle), generator=_gen(3)).images
        y = make_sampler(loaded.sampler)(loaded, _labels(loaded), generator=_gen(3)).images
    torch.testing.assert_close(x, y, atol=0, rtol=0, msg="the loaded model samples other images")


def check_drift_step(bundle: Any) -> None:
    """A Drift-AR bundle: the declared init runs and one drift-recipe step gives a finite loss and gradients."""
    from driftar_core.method.objective import DriftARMethodConfig, DriftARObjective, prepare_drift
    b = copy.deepcopy(bundle).train()
    prepare_drift(b)
    objective = DriftARObjective(b, DriftARMethodConfig(max_tokens=64))
    objective.set_progress(0, 10)
    L, c = b.tokenizer.token_shape
    images = b.tokenizer.decode(torch.rand(BATCH, L, c, generator=_gen(4)).to(b.device) * 2 - 1)
    loss, _ = objective(images, _labels(b))
    assert bool(torch.isfinite(loss)), f"drift loss is {float(loss)}"
    loss.backward()
    assert any(p.grad is not None for p in b.head.parameters()), "the drift decoder got no gradient"


# -------------------------------------------------------------------------------------------------
# The pytest base class
# -------------------------------------------------------------------------------------------------


class BackboneConformance:
    """Subclass as ``TestSomething`` and provide a ``bundle`` fixture; the checks that do not apply to a
    bundle (verify on a masked backbone, the drift step on a baseline) skip with the reason."""

    @pytest.fixture
    def bundle(self) -> Any:  # pragma: no cover - the subclass provides it
        raise NotImplementedError("provide a `bundle` fixture returning a ModelBundle")

    def test_protocols(self, bundle: Any) -> None:
        check_protocols(bundle)

    def test_plan_and_steps(self, bundle: Any) -> None:
        check_plan_and_steps(bundle.eval())

    def test_generate(self, bundle: Any) -> None:
        check_generate(bundle.eval())

    def test_verify_and_rollback(self, bundle: Any) -> None:
        if not isinstance(bundle.backbone, SpeculativeBackbone):
            pytest.skip("the backbone is not a SpeculativeBackbone (no verify / rollback)")
        check_verify_and_rollback(bundle.eval())

    def test_speculative_exact_at_zero_tolerance(self, bundle: Any) -> None:
        if not isinstance(bundle.backbone, SpeculativeBackbone) or not isinstance(bundle.draft, (TokenDraft, FeatureDraft)):
            pytest.skip("no speculative decoding: needs a SpeculativeBackbone and a TokenDraft or FeatureDraft")
        check_speculative_exact(bundle.eval())

    def test_save_load_round_trip(self, bundle: Any, tmp_path: Path) -> None:
        check_save_load(bundle, tmp_path)

    def test_drift_step(self, bundle: Any) -> None:
        from driftar_core.method.drift_decoder import DriftDecoder
        from driftar_core.plugins import registries
        if not isinstance(bundle.head, DriftDecoder) or registries().backbones.get(bundle.backbone_name).drift is None:
            pytest.skip("not a Drift-AR bundle (no drift decoder, or the backbone declares no DriftARSupport)")
        check_drift_step(bundle)
