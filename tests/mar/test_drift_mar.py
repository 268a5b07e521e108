"""Drift-AR on MAR: the 1-NFE bundle, copies from a trained target, the two-phase objective, and the
baseline -> drift start through the trainer."""
from __future__ import annotations

import torch
from driftar_mar.build import build_mar
from driftar_mar.config import MARConfig
from mar_small import SMALL

from driftar_core.config import RunConfig
from driftar_core.method.objective import (
    DriftARMethodConfig,
    DriftARObjective,
    prepare_drift,
)
from driftar_core.sampling import generate

DRIFT = dict(SMALL, head_type="drift", drift_ar=dict(decoder=dict(width=32, depth=2, num_generated=16),
                                                 draft=dict(dim=32, depth=1, num_heads=2)))


def drift_bundle():
    return build_mar(MARConfig(**DRIFT))


def test_drift_bundle_is_one_nfe_with_frozen_phi_and_a_draft():
    b = drift_bundle()
    assert b.head.nfe == 1 and b.head.noise_shape == (1, 4)
    assert b.draft is not None
    assert all(not p.requires_grad for p in b.phi.parameters())
    out = generate(b.eval(), torch.tensor([1, 2]), num_iter=4, generator=torch.Generator().manual_seed(0))
    assert out.counts.backbone_passes == 4 and out.counts.head_nfe == 4     # one head NFE per AR step
    assert torch.isfinite(out.images).all()


def test_prepare_drift_copies_phi_and_draft_from_the_target():
    b = drift_bundle()
    with torch.no_grad():                       # make the target differ from the copies' init
        for p in b.backbone.parameters():
            p.add_(torch.randn_like(p))
    prepare_drift(b)
    mar = b.backbone
    torch.testing.assert_close(b.phi.z_proj.weight, mar.z_proj.weight)
    torch.testing.assert_close(b.phi.block.mlp.fc1.weight, mar.decoder_blocks[-2].mlp.fc1.weight)
    torch.testing.assert_close(b.draft.blocks[0].attn.qkv.weight, mar.decoder_blocks[0].attn.qkv.weight)
    # phi is a copy, not a view: training the target does not move it
    with torch.no_grad():
        mar.z_proj.weight.add_(1.0)
    assert not torch.equal(b.phi.z_proj.weight, mar.z_proj.weight)


def _grads(module):
    return [p.grad for p in module.parameters() if p.requires_grad]


def test_phase_one_trains_everything_phase_two_only_the_decoder(tokens):
    b = drift_bundle().train()
    prepare_drift(b)
    images = b.tokenizer.decode(tokens[0])
    obj = DriftARObjective(b, DriftARMethodConfig(max_tokens=64, train_backbone=True))
    obj.set_progress(0, 100)                                  # phase I, alpha = 0.95
    loss, metrics = obj(images, tokens[1])
    loss.backward()
    assert metrics["alpha"] == 0.95 and "draft_reg" in metrics and "raw_scale" in metrics
    assert all(g is not None for g in _grads(b.head))
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(b.backbone))
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(b.draft))
    b.zero_grad(set_to_none=True)
    obj.set_progress(85, 100)                                 # phase II: encoder and draft frozen
    loss, metrics = obj(images, tokens[1])
    loss.backward()
    assert float(metrics["alpha"]) == 0.0 and "draft_reg" not in metrics
    assert all(g is None for g in _grads(b.backbone)) and all(g is None for g in _grads(b.draft))
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(b.head))


def test_default_recipe_keeps_the_trained_backbone_fixed(tokens):
    b = drift_bundle().train()
    prepare_drift(b)
    obj = DriftARObjective(b, DriftARMethodConfig(max_tokens=64))
    obj.set_progress(0, 100)
    loss, _ = obj(b.tokenizer.decode(tokens[0]), tokens[1])
    loss.backward()
    assert all(g is None for g in _grads(b.backbone))
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(b.draft))


def test_drift_recipe_starts_from_a_baseline_backbone(tmp_path):
    """build_bundle: baseline backbone loaded strictly, its DDPM head dropped, phi/draft copied."""
    from driftar_core.train.trainer import build_bundle
    base = build_mar(MARConfig(**SMALL))
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.1 * torch.randn_like(p))
    base.arch = "mar_tiny"
    base.save(tmp_path / "base")
    args = {k: v for k, v in DRIFT.items()}
    cfg = RunConfig.model_validate({"backbone": "mar", "recipe": "drift",
                                    "model": {"arch": "mar_tiny_drift", "args": args, "init_from": str(tmp_path / "base")}})
    b = build_bundle(cfg)
    sd_base = base.backbone.state_dict()
    for k, v in b.backbone.state_dict().items():
        torch.testing.assert_close(v, sd_base[k])
    torch.testing.assert_close(b.phi.z_proj.weight, base.backbone.z_proj.weight)
