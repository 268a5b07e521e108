"""driftar bench on tiny untrained models: pass counts, report keys, ratios, markdown and plot."""
from __future__ import annotations

import json

import pytest
import torch

from driftar_core.bench import RESULT_KEYS, run_bench, to_markdown, write_outputs

SMALL = dict(encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2, decoder_embed_dim=32, decoder_depth=2,
             decoder_num_heads=2, buffer_size=2, diffloss=dict(depth=1, width=16, num_sampling_steps=7),
             sampling=dict(num_iter=4, cfg=2.0))


@pytest.fixture
def two_models(tmp_path):
    from driftar_mar.build import build_mar
    from driftar_mar.config import MARConfig
    torch.manual_seed(0)
    paths = []
    for name, extra in (("base", {}), ("drift", dict(head_type="drift", drift_ar=dict(
        decoder=dict(width=16, depth=1), draft=dict(dim=32, depth=1, num_heads=2))))):
        b = build_mar(MARConfig(**SMALL, **extra))
        b.arch = f"mar_small_{name}"
        paths.append(str(b.save(tmp_path / name)))
    return paths


def test_bench_counts_passes_and_reports_ratios(two_models, tmp_path):
    report = run_bench(two_models, batch_sizes=(1, 3), repeats=2, warmup=1, quality=False, progress=False,
                       burn_in_s=0.05)
    assert report["settings"]["burn_in_s"] == 0.05 and "0.05 s burn-in" in to_markdown(report)
    base, drift = report["results"]
    assert set(RESULT_KEYS) <= set(base)
    assert (base["backbone_passes"], base["head_nfe"], base["nfe"]) == (4, 4 * 7, 4 + 28)   # K steps x 7-step head
    assert (drift["backbone_passes"], drift["head_nfe"], drift["nfe"]) == (4, 4, 8)          # 1 NFE per AR step
    assert base["draft_passes"] == 0 and base["fd"] is None
    r = report["ratios"]
    assert r[two_models[0]]["speedup_b1"] == 1.0
    assert set(r[two_models[1]]) == {"speedup_b1", "speedup_b3", "ar_stage_speedup", "decoder_speedup", "stage_product",
                                    "fd_ratio"}
    assert r[two_models[1]]["decoder_speedup"] > 0
    write_outputs(report, str(tmp_path / "b.json"), str(tmp_path / "b.md"), str(tmp_path / "b.png"))
    assert json.loads((tmp_path / "b.json").read_text())["results"][1]["head_nfe"] == 4
    md = to_markdown(report)
    assert md.count("\n| `") == 2 and "speedup b3" in md          # one row per model
    assert (tmp_path / "b.png").stat().st_size > 1000


def test_batch1_repeats_rotate_classes_and_counts_are_averaged():
    from driftar_core.bench import _time_once, mean_counts
    from driftar_core.interfaces import PassCounts
    seen = []

    def sampler(bundle, labels, generator=None):
        seen.append(labels.tolist())
        return type("Out", (), {"counts": PassCounts(backbone_passes=10 + len(seen))})()
    bundle = type("B", (), {"device": "cpu"})()
    for r in range(3):
        _time_once(bundle, 1, 5 + r, sampler)
    assert seen == [[5], [6], [7]]                                     # not always digit 0
    a = PassCounts(backbone_passes=12, head_nfe=20, draft_passes=60, extra={"acceptance_rate": 0.8})
    b = PassCounts(backbone_passes=14, head_nfe=20, draft_passes=50, extra={"acceptance_rate": 0.6})
    m = mean_counts([a, b])
    assert (m["backbone_passes"], m["head_nfe"], m["draft_passes"]) == (13.0, 20, 55.0)
    assert abs(m["acceptance_rate"] - 0.7) < 1e-12 and m["mean_accepted_len"] is None
