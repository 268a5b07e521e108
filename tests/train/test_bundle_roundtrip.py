"""Saved bundles (final model/ and every checkpoint) load through load_bundle and sample identically."""
from __future__ import annotations

import torch

from driftar_core.bundle import load_bundle, load_safetensors
from driftar_core.sampling import generate
from driftar_core.train import train


def _samples(bundle, seed: int = 0) -> torch.Tensor:
    labels = torch.arange(6) % 10
    return generate(bundle, labels, generator=torch.Generator().manual_seed(seed)).images


def test_save_load_bundle_gives_identical_state_and_samples(tmp_path, fake_plugin, fake_bundle):
    fake_bundle.eval()
    fake_bundle.save(tmp_path / "b")
    loaded = load_bundle(tmp_path / "b")                    # config.json -> registry -> build -> weights
    assert type(loaded.backbone) is type(fake_bundle.backbone) and loaded.config == fake_bundle.config
    sd, ld = fake_bundle.state_dict(), loaded.state_dict()
    assert sd.keys() == ld.keys() and all(torch.equal(sd[k], ld[k]) for k in sd)
    assert torch.equal(_samples(fake_bundle), _samples(loaded))
    assert not torch.equal(_samples(loaded, 0), _samples(loaded, 1))   # the seed matters


def test_trained_run_saves_loadable_ema_bundles(make_config, fake_plugin):
    run = train(make_config(steps=4, log_every=2, sample_every=0, ckpt_every=4), progress=False)
    final = load_bundle(run / "model")
    ckpt = load_bundle(run / "checkpoints" / "step-0000004")          # a checkpoint is a bundle too
    ema = load_safetensors(run / "checkpoints" / "step-0000004" / "model.safetensors")
    raw = load_safetensors(run / "checkpoints" / "step-0000004" / "raw.safetensors")
    for k, v in final.state_dict().items():
        assert torch.equal(v, ema[k]) and torch.equal(v, ckpt.state_dict()[k])
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)        # EMA (decay 0.9) lags the live weights
    assert torch.equal(_samples(final), _samples(ckpt))
