"""Tiny randomised Drift-AR models (MAR and NextStep-1) and their ONNX bundles, exported once per session.

Every weight is perturbed (the drift decoder and MAR zero-initialise their AdaLN and output layers),
so every output depends on every input and a wrong wire in a graph shows up as a parity failure.
The MAR bundle is made through the command line (``driftar export``), the NextStep-1 bundle through
the library (``export_onnx``), so both entry points are exercised.
"""
from __future__ import annotations

import pytest
import torch

MAR_SMALL = dict(encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2, decoder_embed_dim=32, decoder_depth=2,
                 decoder_num_heads=2, buffer_size=2, img_size=8, head_type="drift",
                 drift_ar=dict(decoder=dict(width=16, depth=1), draft=dict(dim=32, depth=1, num_heads=2)),
                 sampling=dict(num_iter=5, cfg=2.0))
CAUSAL_SMALL = dict(img_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=64, head_type="drift",
                    drift_ar=dict(decoder=dict(width=16, depth=1), draft=dict(kind="layer", depth=1),
                                  speculative=dict(draft_len=3, tau0=0.0, kappa=0.5)),
                    sampling={"num_iter": 16, "cfg": 2.0, "cfg_schedule": "constant"})
MAX_BATCH = 4


def perturb(bundle, seed: int, scale: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in bundle.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return bundle.eval()


@pytest.fixture(scope="session")
def tiny_mar():
    from driftar_mar.build import build_mar
    from driftar_mar.config import MARConfig
    torch.manual_seed(0)
    bundle = build_mar(MARConfig(**MAR_SMALL))
    bundle.arch = "mar_small_drift"
    return perturb(bundle, 0)


@pytest.fixture(scope="session")
def tiny_causal():
    from driftar_nextstep1.build import build_nextstep1
    from driftar_nextstep1.config import NextStep1Config
    torch.manual_seed(0)
    bundle = build_nextstep1(NextStep1Config(**CAUSAL_SMALL))
    bundle.draft.init_from_target(bundle.backbone)          # the draft starts as the target's first layer
    bundle.arch = "nextstep1_small_drift"
    return perturb(bundle, 1, scale=0.05)


@pytest.fixture(scope="session")
def tiny_window():
    """The tiny causal Drift-AR model with the feature-level window draft instead of the layer draft."""
    from driftar_nextstep1.build import build_nextstep1
    from driftar_nextstep1.config import NextStep1Config
    torch.manual_seed(0)
    bundle = build_nextstep1(NextStep1Config(**{**CAUSAL_SMALL, "drift_ar": {
        **CAUSAL_SMALL["drift_ar"], "draft": {"kind": "window", "window": 3, "width": 32, "depth": 1}}}))
    bundle.arch = "nextstep1_small_window"
    return perturb(bundle, 2, scale=0.05)


@pytest.fixture(scope="session")
def window_runner(tiny_window, tmp_path_factory):
    from driftar_export.exporter import export_onnx
    from driftar_export.options import OnnxOptions
    from driftar_export.runtime.runner import Runner
    out = tmp_path_factory.mktemp("window_export") / "bundle"
    export_onnx(tiny_window, out, OnnxOptions(max_batch=MAX_BATCH), ref=None, log=lambda s: None)
    return Runner(out, threads=1)


@pytest.fixture(scope="session")
def mar_model_dir(tiny_mar, tmp_path_factory):
    return tiny_mar.save(tmp_path_factory.mktemp("mar_model") / "model")


@pytest.fixture(scope="session")
def mar_bundle(mar_model_dir, tmp_path_factory):
    """``driftar export --model DIR --target onnx --out OUT --set max_batch=4`` -> OUT."""
    from driftar_core.cli import main
    out = tmp_path_factory.mktemp("mar_export") / "bundle"
    try:
        main(["export", "--model", str(mar_model_dir), "--target", "onnx", "--out", str(out),
              "--set", f"max_batch={MAX_BATCH}", "--threads", "1"])
    except SystemExit as e:
        assert not e.code, f"driftar export failed with exit code {e.code}"
    return out


@pytest.fixture(scope="session")
def causal_bundle(tiny_causal, tmp_path_factory):
    from driftar_export.exporter import export_onnx
    from driftar_export.options import OnnxOptions
    out = tmp_path_factory.mktemp("causal_export") / "bundle"
    export_onnx(tiny_causal, out, OnnxOptions(max_batch=MAX_BATCH), ref=None, log=lambda s: None)
    return out


@pytest.fixture(scope="session")
def mar_runner(mar_bundle):
    from driftar_export.runtime.runner import Runner
    return Runner(mar_bundle, threads=1)


@pytest.fixture(scope="session")
def causal_runner(causal_bundle):
    from driftar_export.runtime.runner import Runner
    return Runner(causal_bundle, threads=1)
