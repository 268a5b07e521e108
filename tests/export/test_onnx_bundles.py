"""ONNX bundles of tiny Drift-AR models: the manifest's parity records, and the model's own loops over the
ONNX Runtime graphs (plain MAR, plain and speculative NextStep-1) against eager PyTorch, same seed."""
from __future__ import annotations

import pytest
import torch

from driftar_core.sampling import draw_noise, generate
from driftar_core.speculative import speculative_generate

ATOL = 1e-4            # fp32 graph parity (issue 5)
LOOP_ATOL = 1e-4       # a whole sampling loop (round-off through every AR step)


def graph_dims_were_checked(manifest):
    for role, g in manifest["graphs"].items():
        example = {n: d["example"] for n, d in g["dims"].items()}
        assert len(g["parity"]) == 2, role
        for p in g["parity"]:
            assert p["dims"] != example, f"{role}: parity ran at the example's shape"
            assert max(p["max_abs_diff"].values()) <= ATOL, (role, p)


def test_mar_manifest_records_parity_at_two_other_shapes(mar_bundle):
    import onnx

    from driftar_export.manifest import read_manifest
    m = read_manifest(mar_bundle)
    assert set(m["graphs"]) == {"target_step", "decoder", "detokenize"}
    assert m["graphs"]["target_step"]["binds"] == "backbone.step_net" and m["graphs"]["decoder"]["binds"] == "head.decode"
    assert m["sampler"]["kind"] == "plain" and m["opset"] == 20
    assert m["graphs"]["target_step"]["dims"]["rows"]["max"] == 8                 # 2 x max_batch (CFG rows)
    assert [i["name"] for i in m["graphs"]["target_step"]["inputs"]] == ["tokens", "keep", "labels", "positions"]
    assert {"torch", "onnx", "onnxruntime", "onnxscript"} <= {k for k, v in m["versions"].items() if v}
    graph_dims_were_checked(m)
    s = m["parity"]["sampler"]
    assert s["counts_equal"] and s["max_abs_pixel_diff"] < LOOP_ATOL and s["passed"]
    for g in m["graphs"].values():
        onnx.checker.check_model(str(mar_bundle / g["file"]), full_check=True)
        assert not any(n.op_type in ("Loop", "Scan", "If") for n in onnx.load(str(mar_bundle / g["file"])).graph.node)
    assert (mar_bundle / "config.json").is_file() and (mar_bundle / "README.md").is_file()


@pytest.mark.parametrize("batch,overrides", [(3, {}), (1, {"cfg": 1.0}), (4, {"num_iter": 16, "temperature": 0.7})])
def test_mar_ort_loop_equals_generate(tiny_mar, mar_runner, batch, overrides):
    """The runner runs generate() itself over the graphs: a seed draws the same orders and noise."""
    labels = torch.arange(batch) * 3 % 10
    ref = generate(tiny_mar, labels, generator=torch.Generator().manual_seed(batch), **overrides)
    out = mar_runner.sample(labels, generator=torch.Generator().manual_seed(batch), **overrides)
    torch.testing.assert_close(out.tokens, ref.tokens, atol=LOOP_ATOL, rtol=0)
    torch.testing.assert_close(out.images, ref.images, atol=LOOP_ATOL, rtol=0)
    assert (out.counts.backbone_passes, out.counts.head_nfe) == (ref.counts.backbone_passes, ref.counts.head_nfe)
    assert out.tokens.abs().sum(-1).all()                                     # every token committed


def test_runner_sample_chunks_above_max_batch(tiny_mar, mar_runner):
    """A batch above the bundle's bound runs in chunks, one after the other from the same generator."""
    labels = torch.arange(6) % 10                                              # max_batch is 4
    g = torch.Generator().manual_seed(11)
    ref = torch.cat([generate(tiny_mar, labels[:4], generator=g).images, generate(tiny_mar, labels[4:], generator=g).images])
    got = mar_runner.sample(labels, generator=torch.Generator().manual_seed(11))
    assert got.counts.extra["chunks"] == 2
    assert float((got.images - ref).abs().max()) < LOOP_ATOL


def test_causal_manifest(causal_bundle):
    from driftar_export.manifest import read_manifest
    m = read_manifest(causal_bundle)
    assert set(m["graphs"]) == {"target_prefill", "target_step", "target_verify", "draft_prefill", "draft_step",
                                "decoder", "detokenize"}
    assert m["sampler"] == {"kind": "speculative", "cfg": 2.0, "cfg_schedule": "constant", "temperature": 1.0,
                            "draft_len": 3, "tau0": 0.0, "kappa": 0.5, "early_stop_gamma": None,
                            "entropy_ema_init": None, "entropy_ema_decay": 0.9,
                            "speculate_up_to": 1}               # speculative.max_batch: larger batches plain
    verify, step = m["graphs"]["target_verify"], m["graphs"]["target_step"]
    assert verify["dims"]["elements"] == {"min": 1, "max": 4, "example": 2, "checks": [1, 4]}  # 1 .. draft_len + 1
    assert step["alias_of"] == "target_verify" and step["file"] == verify["file"]  # one graph, two roles
    assert step["dims"]["elements"]["max"] == 1 and step["inputs"][0]["shape"] == ["rows", "elements", 4]
    assert m["graphs"]["target_step"]["outputs"][2]["shape"][3] != m["graphs"]["target_step"]["inputs"][2]["shape"][3]
    assert (m["graphs"]["target_verify"]["binds"], m["graphs"]["draft_step"]["binds"]) == ("backbone.feed_net",
                                                                                        "draft.feed_net")
    assert m["graphs"]["target_prefill"]["outputs"][0]["shape"][0] == 2 and m["graphs"]["draft_prefill"]["outputs"][0]["shape"][0] == 1
    graph_dims_were_checked(m)
    assert m["parity"]["sampler"]["counts_equal"] and m["parity"]["sampler"]["max_abs_pixel_diff"] < LOOP_ATOL


def test_causal_plain_loop_equals_generate(tiny_causal, causal_runner):
    labels = torch.tensor([3, 8, 1])
    noise = draw_noise(tiny_causal.head, 3, 16, torch.Generator().manual_seed(2), "cpu")
    ref = generate(tiny_causal, labels, noise=noise)
    out = causal_runner.sample(labels, noise=noise, sampler="plain")
    torch.testing.assert_close(out.tokens, ref.tokens, atol=LOOP_ATOL, rtol=0)
    assert out.counts.backbone_passes == ref.counts.backbone_passes == 16


# the layer draft (draft_step graph, KV cache on the host) and the window draft (draft_window graph,
# one draft step per call, one decoder call per round): same loop, same noise, same counts
DRAFTS = {"layer": ("tiny_causal", "causal_runner"), "window": ("tiny_window", "window_runner")}


@pytest.mark.parametrize("draft", sorted(DRAFTS))
@pytest.mark.parametrize("kw", [
    dict(),                                                        # the bundle's default (kappa 0.5)
    dict(tau0=0.6, kappa=0.5, cfg=1.0),                            # partial acceptance, no CFG
    dict(draft_len=2, tau0=0.3, kappa=1.0, early_stop_gamma=0.9),  # early stop + entropy EMA
])
def test_speculative_loop_equals_speculative_generate(request, draft, kw):
    model, runner = (request.getfixturevalue(name) for name in DRAFTS[draft])
    labels = torch.tensor([3, 8])
    noise = draw_noise(model.head, 2, 16, torch.Generator().manual_seed(3), "cpu")
    settings = {**{k: v for k, v in runner.settings.items() if k not in ("kind", "speculate_up_to")}, **kw}
    ref = speculative_generate(model, labels, noise=noise, **settings)
    out = runner.sample(labels, noise=noise, sampler="speculative", **kw)
    torch.testing.assert_close(out.tokens, ref.tokens, atol=LOOP_ATOL, rtol=0)
    for key in ("rounds", "accepted", "drafted", "early_stops"):
        assert out.counts.extra[key] == ref.counts.extra[key], key
    assert (out.counts.backbone_passes, out.counts.draft_passes, out.counts.head_nfe) == \
        (ref.counts.backbone_passes, ref.counts.draft_passes, ref.counts.head_nfe)
    assert out.counts.backbone_passes == 16 - out.counts.extra["accepted"]     # target passes = rounds


def test_default_loop_follows_the_eager_default_sampler(tiny_causal, causal_runner):
    """Above speculative.max_batch the eager default sampler decodes plainly; the runner does the same."""
    labels = torch.tensor([3, 8])
    noise = draw_noise(tiny_causal.head, 2, 16, torch.Generator().manual_seed(3), "cpu")
    from driftar_core.speculative import make_sampler
    ref = make_sampler(tiny_causal.sampler)(tiny_causal, labels, noise=noise)
    out = causal_runner.sample(labels, noise=noise)
    torch.testing.assert_close(out.tokens, ref.tokens, atol=LOOP_ATOL, rtol=0)
    assert out.counts.draft_passes == ref.counts.draft_passes == 0
    one = causal_runner.sample(labels[:1], noise=noise[:1])                     # batch 1: speculative
    assert one.counts.draft_passes > 0


def test_window_draft_manifest(window_runner):
    """The feature-level window draft: one draft_window graph, no draft KV cache graphs."""
    from driftar_export.manifest import read_manifest
    m = read_manifest(window_runner.directory)
    assert set(m["graphs"]) == {"target_prefill", "target_step", "target_verify", "draft_window", "decoder",
                                "detokenize"}
    assert m["graphs"]["draft_window"]["binds"] == "draft.forward" and m["parity"]["sampler"]["counts_equal"]


def test_speculative_cases_cover_acceptance(tiny_causal, causal_runner):
    """The parametrised cases are not vacuous: some drafts are accepted, some rejected."""
    noise = draw_noise(tiny_causal.head, 2, 16, torch.Generator().manual_seed(3), "cpu")
    out = causal_runner.sample(torch.tensor([3, 8]), noise=noise, tau0=0.6, kappa=0.5, cfg=1.0)
    assert 0 < out.counts.extra["accepted"] < out.counts.extra["drafted"]


def test_zero_tolerance_speculative_equals_plain_ort(causal_runner):
    """docs/method.md "Invariants", on the exported loop: tau0 = kappa = 0 reproduces sequential decoding."""
    noise = torch.randn(2, 16, 1, 4, generator=torch.Generator().manual_seed(0))
    plain = causal_runner.sample(torch.tensor([1, 6]), noise=noise, sampler="plain")
    spec = causal_runner.sample(torch.tensor([1, 6]), noise=noise, tau0=0.0, kappa=0.0)
    torch.testing.assert_close(spec.tokens, plain.tokens, atol=1e-5, rtol=0)
    assert spec.counts.extra["rounds"] == 16 - spec.counts.extra["accepted"]


def test_sampler_settings_resolve_per_loop(causal_runner, mar_runner):
    """A causal bundle with a draft runs either loop with the model's own settings; MAR runs the plain one."""
    assert causal_runner.resolve({"sampler": "plain"}) == {"kind": "plain", "num_iter": 16, "cfg": 2.0,
                                                          "cfg_schedule": "constant", "temperature": 1.0}
    spec = causal_runner.resolve({"kappa": 1.0, "cfg": None})
    assert (spec["kind"], spec["kappa"], spec["draft_len"], spec["cfg"]) == ("speculative", 1.0, 3, 2.0)
    with pytest.raises(ValueError, match="cannot run a 'speculative' sampler"):
        mar_runner.resolve({"sampler": "speculative"})
    with pytest.raises(ValueError, match="cannot be set for the plain sampler"):
        mar_runner.resolve({"kappa": 1.0})
