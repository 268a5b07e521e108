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
    """Catches: a ratio computed from the wrong times (inverted, another batch size's latency, the AR stage's
    time in the decoder speedup) or pass counts that are not K steps x the head's NFE; every ratio is
    re-derived from the times the report itself records, so no assertion depends on how fast the machine is."""
    report = run_bench(two_models, batch_sizes=(1, 3), repeats=2, warmup=1, quality=False, progress=False,
                       burn_in_s=0.05)
    assert report["settings"]["burn_in_s"] == 0.05 and "0.05 s burn-in" in to_markdown(report)
    base, drift = report["results"]
    assert [base["model"], drift["model"]] == two_models                # no sequential twin added: MAR never speculates
    assert set(RESULT_KEYS) <= set(base)
    assert (base["backbone_passes"], base["head_nfe"], base["nfe"]) == (4, 4 * 7, 4 + 28)   # K steps x 7-step head
    assert (drift["backbone_passes"], drift["head_nfe"], drift["nfe"]) == (4, 4, 8)          # 1 NFE per AR step
    assert base["draft_passes"] == drift["draft_passes"] == 0 and base["fd"] is None
    for row in (base, drift):
        for b in (1, 3):
            q1, q3 = row[f"latency_iqr_ms_b{b}"]
            assert 0 < q1 <= row[f"latency_ms_b{b}"] <= q3            # the median lies inside its IQR
            assert row[f"ar_ms_b{b}"] > 0 and row[f"decoder_ms_b{b}"] > 0
    r = report["ratios"]
    assert set(r) == set(two_models)
    for row in (base, drift):
        ratio = r[row["model"]]
        assert {"speedup_b1", "speedup_b3", "ar_stage_speedup", "decoder_speedup", "fd_ratio"} <= set(ratio)
        assert "stage_product" not in ratio                            # stage times add; they do not multiply
        for b in (1, 3):                                               # speedup = reference time / model time
            assert ratio[f"speedup_b{b}"] == pytest.approx(base[f"latency_ms_b{b}"] / row[f"latency_ms_b{b}"], rel=1e-12)
        assert ratio["ar_stage_speedup"] == pytest.approx(base["ar_ms_b1"] / row["ar_ms_b1"], rel=1e-12)
        assert ratio["decoder_speedup"] == pytest.approx(base["decoder_ms_b1"] / row["decoder_ms_b1"], rel=1e-12)
        assert ratio["fd_ratio"] is None and ratio.get("ar_stage_speedup_vs_plain") is None   # no quality, no draft
    assert all(r[two_models[0]][k] == 1.0 for k in ("speedup_b1", "speedup_b3", "ar_stage_speedup", "decoder_speedup"))
    write_outputs(report, str(tmp_path / "b.json"), str(tmp_path / "b.md"), str(tmp_path / "b.png"))
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["results"][1]["head_nfe"] == 4 and saved["ratios"] == r
    md = to_markdown(report)
    assert md.count("\n| `") == 2 and "speedup b3" in md          # one row per model
    drift_line = next(line for line in md.splitlines() if line.startswith(f"| `{two_models[1]}`"))
    for key in ("speedup_b1", "speedup_b3", "decoder_speedup"):        # the table shows the same ratios
        assert f"| {r[two_models[1]][key]:.2f}x |" in drift_line, key
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
