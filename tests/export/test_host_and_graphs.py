"""Before any export: the host-side pieces equal the PyTorch lines they mirror, and the graph modules
compute exactly what the backbones' step / verify / prefill compute (torch vs torch, float64 tolerance
not needed: same ops)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from driftar_export.graphs.spec import DimRange
from driftar_export.runtime import host


def test_host_helpers_equal_the_pytorch_lines():
    from driftar_core.sampling import cfg_at
    from driftar_mar.mar import cosine_mask_lengths
    from driftar_nextstep1.nextstep import token_layer_norm
    for cfg, p, s in [(3.0, 0.25, "linear"), (2.0, 1.0, "constant"), (1.0, 0.5, "linear")]:
        assert host.cfg_at(cfg, p, s) == cfg_at(cfg, p, s)
    for L, K in [(16, 5), (64, 16), (64, 64), (7, 1)]:
        assert host.cosine_mask_lengths(L, K) == cosine_mask_lengths(L, K)
    x = torch.randn(3, 5, 4) * 3
    np.testing.assert_allclose(host.token_layer_norm(x.numpy()), token_layer_norm(x).numpy(), atol=2e-6)


def test_kept_indices_equal_mar(tiny_mar):
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(3, 16, dtype=torch.bool)
    for i in range(3):
        mask[i, torch.randperm(16, generator=g)[:6]] = False
    keep = tiny_mar.backbone.kept_indices(mask)
    np.testing.assert_array_equal(host.kept_indices(mask.numpy(), tiny_mar.backbone.buffer_size), keep.numpy())


def test_dim_range_refuses_examples_the_exporter_would_specialise():
    with pytest.raises(ValueError, match="specialises"):
        DimRange(1, 8, 1, (2, 8))
    with pytest.raises(ValueError, match="differ from"):
        DimRange(1, 8, 4, (4, 8))
    r = DimRange.spread(1, 32)
    assert r.example not in r.checks and (r.min, r.max) == (1, 32)


@torch.no_grad()
def test_mar_step_graph_equals_mar_step_with_cfg(tiny_mar):
    """The graph's (tokens, keep, labels with the null id, positions) interface = MAR.step on a CFG state."""
    from driftar_export.graphs.masked import MARStepGraph
    mar = tiny_mar.backbone
    state = mar.new_state(torch.tensor([1, 7, 3]), num_iter=5, cfg=True, generator=torch.Generator().manual_seed(0))
    steps = mar.plan(state)
    mar.commit(state, steps[0].positions, torch.randn(3, steps[0].positions.shape[1], 4))
    pos = steps[1].positions
    ref = mar.step(state, pos)
    labels = torch.cat([state.labels, torch.full((3,), mar.class_emb.num_embeddings)])
    keep = mar.kept_indices(torch.cat([state.mask, state.mask]))
    z, e, eg = MARStepGraph(mar)(torch.cat([state.tokens, state.tokens]), keep, labels, torch.cat([pos, pos]))
    torch.testing.assert_close(z, ref.z, atol=1e-6, rtol=0)
    torch.testing.assert_close(e, ref.entropy, atol=1e-6, rtol=0)
    torch.testing.assert_close(eg, ref.entropy_global, atol=1e-6, rtol=0)


@torch.no_grad()
def test_causal_graphs_equal_new_state_step_and_verify(tiny_causal):
    """Prefill + feed (element 0 = <boi>, then the pending token + 2 drafts) = new_state / step / verify."""
    from driftar_export.graphs.causal import FeedGraph, PrefillGraph
    lm = tiny_causal.backbone
    state = lm.new_state([2, 5], cfg=True)
    ids, valid = lm.prefix_ids(lm.prompts([2, 5]) + ["", ""])
    P = ids.shape[1]
    k, v = PrefillGraph(lm)(ids[:, :P - 1], valid[:, :P - 1])
    torch.testing.assert_close(k, torch.stack([c[0] for c in state.cache]), atol=1e-6, rtol=0)
    feed = FeedGraph(lm, lm.text.boi_id)
    ref = lm.step(state, torch.zeros(2, 1, dtype=torch.long))                  # feeds <boi>
    z, e, k, v = feed(torch.zeros(4, 1, 4), torch.tensor([0]), k, v, valid[:, :P - 1])
    torch.testing.assert_close(z, ref.z, atol=1e-6, rtol=0)
    torch.testing.assert_close(e, ref.entropy, atol=1e-6, rtol=0)
    x1, drafts = torch.randn(2, 1, 4), torch.randn(2, 2, 4)
    lm.commit(state, torch.zeros(2, 1, dtype=torch.long), x1)
    ref = lm.verify(state, drafts)                                             # pending x_1 + 2 drafts
    x = torch.cat([x1, drafts], 1)
    kv = torch.cat([valid[:, :P - 1], valid.new_ones(4, 1)], 1)
    z, e, k2, _ = feed(torch.cat([x, x]), torch.tensor([1, 2, 3]), k, v, kv)
    torch.testing.assert_close(z, ref.z, atol=1e-5, rtol=0)
    torch.testing.assert_close(e, ref.entropy, atol=1e-6, rtol=0)
    assert k2.shape[3] == state.cache[0][0].shape[2] == P - 1 + 4               # the grown cache
    assert float(e[:, 1:].std()) > 0                                           # E varies: the mask is live
