"""Drift-AR on NextStep-1: the 1-NFE bundle with its layer draft and frozen phi, the copies from a trained
target, the objective (the draft sees the target's prompts; token-level global entropy), and speculative
decoding as the bundle's default sampler."""
from __future__ import annotations

import pytest
import torch

from driftar_core.method.objective import DriftARMethodConfig, DriftARObjective, prepare_drift
from driftar_core.sampling import draw_noise, generate
from driftar_core.speculative import make_sampler, speculative_generate

LABELS = torch.tensor([3, 8])
DRIFT = dict(head_type="drift", drift_ar=dict(decoder=dict(width=32, depth=2, num_generated=16),
                                             draft=dict(kind="layer", depth=1)))


def drift_ar(draft_layers: int = 1, **section):
    """DRIFT with another layer-draft depth and / or other drift_ar settings (speculative=...)."""
    return {**DRIFT, "drift_ar": {**DRIFT["drift_ar"], "draft": dict(kind="layer", depth=draft_layers), **section}}


@pytest.fixture
def drift_bundle(make_bundle):
    """A randomised tiny Drift-AR NextStep-1 whose phi and draft were copied from its target."""
    def make(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
        b = make_bundle(seed=seed, dtype=dtype, **{**DRIFT, **overrides})
        prepare_drift(b)
        return b
    return make


def _grads(module):
    return [p.grad for p in module.parameters() if p.requires_grad]


def test_drift_bundle_is_one_nfe_with_a_layer_draft_and_frozen_phi(drift_bundle):
    b = drift_bundle()
    assert b.head.nfe == 1 and b.head.noise_shape == (1, 4)
    assert len(b.draft.layers) == 1 and len(b.backbone.layers) == 3
    assert all(not p.requires_grad for p in b.phi.parameters())
    out = generate(b, LABELS, generator=torch.Generator().manual_seed(0))
    assert out.counts.backbone_passes == 16 and out.counts.head_nfe == 16    # one head NFE per token
    assert torch.isfinite(out.images).all()


def test_prepare_drift_copies_the_draft_and_phi_from_the_target(drift_bundle):
    b = drift_bundle()
    t = b.backbone
    torch.testing.assert_close(b.draft.layers[0].self_attn.q_proj.weight, t.layers[0].self_attn.q_proj.weight)
    torch.testing.assert_close(b.draft.image_out_projector.weight, t.image_out_projector.weight)
    torch.testing.assert_close(b.phi.layer.mlp.up_proj.weight, t.layers[t.entropy_layer].mlp.up_proj.weight)
    with torch.no_grad():                                   # copies, not views
        t.layers[0].self_attn.q_proj.weight.add_(1.0)
    assert not torch.equal(b.draft.layers[0].self_attn.q_proj.weight, t.layers[0].self_attn.q_proj.weight)


def test_phi_is_the_penultimate_layer_on_a_one_token_sequence(drift_bundle):
    b = drift_bundle()
    t, x = b.backbone, torch.randn(5, 4)
    # the target's own layer stack at position 0 with one visible key, stopped after the penultimate layer
    h = t.image_in_projector(x)[:, None]
    cos, sin = t.rotary_emb(torch.zeros(1, dtype=torch.long), h.dtype)
    mask = torch.ones(5, 1, 1, 1, dtype=torch.bool)
    ref, _, _ = t.layers[t.entropy_layer](h, cos, sin, mask)
    torch.testing.assert_close(b.phi(x), ref[:, 0])


def test_a_draft_layer_count_beyond_the_target_fails_clearly(make_bundle):
    with pytest.raises(ValueError, match="drift_ar.draft.depth"):
        make_bundle(**drift_ar(draft_layers=4))


def test_objective_trains_draft_and_head_with_the_targets_prompts(drift_bundle):
    b = drift_bundle(prompt_drop_prob=0.5).train()
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    labels = torch.tensor([0, 1, 2, 3])
    seen = {}
    forward_train = b.draft.forward_train

    def spy(tokens, cond):
        seen["draft"], seen["draft_tokens"] = list(cond), tokens
        return forward_train(tokens, cond)
    b.draft.forward_train = spy
    target_forward = b.backbone.forward_train

    def target_spy(tokens, cond, generator=None):
        out = target_forward(tokens, cond, generator)
        seen["target"], seen["target_inputs"], seen["clean"] = list(out.cond), out.inputs, tokens
        return out
    b.backbone.forward_train = target_spy
    torch.manual_seed(3)
    obj = DriftARObjective(b, DriftARMethodConfig(max_tokens=32))
    obj.set_progress(0, 100)
    loss, metrics = obj(images, labels)
    loss.backward()
    assert seen["draft"] == seen["target"] and len(seen["target"]) == 4
    # the target's input noise (robustness to its own samples) reaches the draft unchanged, drawn once
    torch.testing.assert_close(seen["draft_tokens"], seen["target_inputs"])
    assert float((seen["target_inputs"] - seen["clean"]).std()) == pytest.approx(0.2, rel=0.2)
    assert {"draft_reg", "draft_ent", "drift_loss"} <= set(metrics)
    assert all(g is None for g in _grads(b.backbone))                         # default: trained target fixed
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(b.draft))
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(b.head))


def test_objective_gives_the_head_each_tokens_own_entropy(drift_bundle, monkeypatch):
    b = drift_bundle().train()
    got = {}
    loss_terms = b.head.loss_terms

    def spy(*args, **kwargs):
        got["entropy_global"] = kwargs.get("entropy_global")
        return loss_terms(*args, **kwargs)
    monkeypatch.setattr(b.head, "loss_terms", spy)
    obj = DriftARObjective(b, DriftARMethodConfig(max_tokens=32))
    obj.set_progress(0, 100)
    obj(torch.rand(2, 1, 8, 8) * 2 - 1, torch.tensor([1, 2]))
    assert got["entropy_global"] is None       # as in sampling: a causal model has no image-level E yet


def test_draft_loss_is_zero_for_an_exact_copy(drift_bundle):
    """Eq. 3 + alignment vanish when the draft IS the target (all layers): the loss measures the gap."""
    b = drift_bundle(**drift_ar(draft_layers=3))
    tokens = b.tokenizer.encode(torch.rand(2, 1, 8, 8) * 2 - 1)
    out = b.backbone.eval().forward_train(tokens, LABELS)
    terms = b.draft.loss_terms(out.z, out.entropy, tokens=tokens, cond=out.cond)
    assert float(terms["reg"].detach()) < 1e-10 and float(terms["ent"].detach()) < 1e-6
    shallow = drift_bundle(**drift_ar(draft_layers=1))
    out = shallow.backbone.eval().forward_train(tokens, LABELS)
    assert float(shallow.draft.loss_terms(out.z, out.entropy, tokens=tokens, cond=out.cond)["reg"].detach()) > 1e-4


def test_default_sampler_is_speculative_with_the_configs_tolerance(drift_bundle):
    b = drift_bundle(dtype=torch.float64, **drift_ar(speculative=dict(draft_len=3, tau0=0.0, kappa=0.0, max_batch=2)))
    noise = draw_noise(b.head, len(LABELS), 16, torch.Generator().manual_seed(0), "cpu").double()
    assert b.sampler.kind == "speculative" and b.sampler.speculative.max_batch == 2     # declared, as data
    out = make_sampler(b.sampler)(b, LABELS, noise=noise)
    assert "acceptance_rate" in out.counts.extra and out.counts.draft_passes > 0
    ref = generate(b, LABELS, noise=noise)                     # zero tolerance: sequential decoding exactly
    torch.testing.assert_close(out.tokens, ref.tokens, atol=1e-10, rtol=0)
    three = torch.tensor([1, 2, 3])                            # above max_batch: plain decoding, no drafts
    out = make_sampler(b.sampler)(b, three, generator=torch.Generator().manual_seed(0))
    assert out.counts.draft_passes == 0 and "acceptance_rate" not in out.counts.extra
    off = drift_bundle(**drift_ar(speculative=dict(enabled=False)))
    assert off.sampler.kind == "plain" and make_sampler(off.sampler) is generate


def test_speculative_drift_decoding_with_cfg_matches_sequential(drift_bundle):
    b = drift_bundle(dtype=torch.float64)
    noise = draw_noise(b.head, len(LABELS), 16, torch.Generator().manual_seed(1), "cpu").double()
    ref = generate(b, LABELS, cfg=2.5, noise=noise)
    out = speculative_generate(b, LABELS, draft_len=4, tau0=0.0, kappa=0.0, cfg=2.5, noise=noise)
    torch.testing.assert_close(out.tokens, ref.tokens, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="num_iter must be 16"):
        speculative_generate(b, LABELS, num_iter=8, noise=noise)
