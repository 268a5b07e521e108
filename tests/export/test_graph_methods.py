"""Before any ONNX file: the graphs ARE the methods generation calls (driftar_core.graphs), so binding them
into a weightless skeleton of the model gives the eager sampler's output exactly. Here the "graphs" are
the eager modules themselves (``run`` evaluates each spec's traced module in torch), which checks the
plumbing the runtimes rely on: input order, output names, aliases (``target_step`` = ``target_verify``
at one element), and that no host step touches a weight (the skeleton's weights are NaN)."""
from __future__ import annotations

import copy

import pytest
import torch

from driftar_core.graphs import DimRange, bind_graphs
from driftar_core.sampling import generate
from driftar_core.speculative import speculative_generate
from driftar_export.exporter import graph_specs, sampler_settings
from driftar_export.options import OnnxOptions


def test_dim_range_refuses_examples_the_exporter_would_specialise():
    with pytest.raises(ValueError, match="specialises"):
        DimRange(1, 8, 1, (2, 8))
    with pytest.raises(ValueError, match="differ from"):
        DimRange(1, 8, 4, (4, 8))
    r = DimRange.spread(1, 32)
    assert r.example not in r.checks and (r.min, r.max) == (1, 32)


def bound_skeleton(bundle):
    """A NaN-weight copy of ``bundle`` whose graph methods run the original's, through bind_graphs, and
    the roles each call ran."""
    specs, _ = graph_specs(bundle, OnnxOptions(max_batch=4), sampler_settings(bundle))
    records = {s.role: {"binds": s.binds, "inputs": [{"name": io.name, "shape": list(io.shape)} for io in s.inputs],
                        "outputs": [{"name": o} for o in s.outputs], "alias_of": s.alias_of,
                        "dims": {n: d.as_dict() for n, d in s.dims.items()}} for s in specs}
    for s in specs:
        if s.alias_of:                                                      # as the exporter's alias_record pins
            for name, v in s.pinned.items():
                records[s.role]["dims"][name] = {"min": v, "max": v}
    modules = {s.role: s.module for s in specs}
    ran = []

    def run(role, feeds):
        ran.append(role)
        spec = next(s for s in specs if s.role == role)
        out = modules[spec.alias_of or role](*(torch.from_numpy(feeds[io.name]) for io in spec.inputs))
        out = out if isinstance(out, tuple) else (out,)
        return {name: t.numpy() for name, t in zip(spec.outputs, out)}

    skeleton = copy.deepcopy(bundle)
    with torch.no_grad():
        for t in [*skeleton.parameters(), *skeleton.buffers()]:
            if t.is_floating_point():
                t.fill_(float("nan"))
    bind_graphs(skeleton, records, run)
    return skeleton, ran


@torch.no_grad()
def test_masked_loop_through_bound_graphs_equals_eager(tiny_mar):
    skeleton, ran = bound_skeleton(tiny_mar)
    labels = torch.tensor([1, 7, 3])
    ref = generate(tiny_mar, labels, generator=torch.Generator().manual_seed(4))
    got = generate(skeleton, labels, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(got.images, ref.images, atol=0, rtol=0)
    assert set(ran) == {"target_step", "decoder", "detokenize"}
    assert (got.counts.backbone_passes, got.counts.head_nfe) == (ref.counts.backbone_passes, ref.counts.head_nfe)


@torch.no_grad()
@pytest.mark.parametrize("which", ["tiny_causal", "tiny_window"])
def test_causal_loops_through_bound_graphs_equal_eager(which, request):
    bundle = request.getfixturevalue(which)
    skeleton, ran = bound_skeleton(bundle)
    labels = torch.tensor([2, 5])
    for sampler in (generate, speculative_generate):
        ran.clear()
        ref = sampler(bundle, labels, generator=torch.Generator().manual_seed(1))
        got = sampler(skeleton, labels, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(got.images, ref.images, atol=0, rtol=0)
        assert got.counts.backbone_passes == ref.counts.backbone_passes
        assert "target_prefill" in ran and "target_step" in ran                # one element -> the pinned alias
        assert ("target_verify" in ran) == (sampler is speculative_generate)   # several -> the verify graph
        if sampler is speculative_generate:
            assert ("draft_window" in ran) == (which == "tiny_window") != ("draft_step" in ran)
