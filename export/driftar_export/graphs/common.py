"""Graphs of the core's components, which every Drift-AR bundle has: the 1-NFE drift decoder and the
tokenizer's decode; the window draft's step when the bundle has one (``draft_window``).

Each graph IS a method the sampling loop calls (driftar_core.graphs): ``head.decode`` (prior + G in
one pass; temperature, the CFG doubling of eps and the CFG mix stay in ``DriftDecoder.sample``),
``tokenizer.decode`` (the loop clamps to [-1, 1]) and the window draft's ``forward`` (the window of
rows itself lives in its state, as the KV caches do for a layer draft).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from driftar_core.graphs import IO, DimRange, GraphSpec, rand, randn


def decoder_spec(bundle: nn.Module, max_rows: int) -> GraphSpec:
    """``decoder`` = ``DriftDecoder.decode``; ``max_rows`` = the most head rows one AR step (or round) hands it."""
    D, c = bundle.head.z_dim, bundle.head.token_dim

    def make(d: dict[str, int], g: torch.Generator) -> tuple[Tensor, ...]:
        n = d["rows"]
        return randn((n, D), g), rand((n,), g), rand((n,), g), randn((n, c), g)

    return GraphSpec(
        role="decoder", binds="head.decode", bundle=bundle,
        inputs=[IO("z", "float32", ("rows", D)), IO("entropy", "float32", ("rows",)),
                IO("entropy_global", "float32", ("rows",)), IO("eps", "float32", ("rows", c))],
        outputs=["tokens"], dims={"rows": DimRange.spread(1, max_rows)}, make_inputs=make,
        description="1-NFE drift decoder: prior mu(z) + sigma(E) eps, then G (Entropy-AdaLN); CFG on the host")


def detokenize_spec(bundle: nn.Module, max_batch: int) -> GraphSpec:
    """``detokenize`` = ``tokenizer.decode``: tokens [B, L, c] -> images [B, C, H, W]."""
    L, c = bundle.tokenizer.token_shape

    def make(d: dict[str, int], g: torch.Generator) -> tuple[Tensor, ...]:
        return (randn((d["batch"], L, c), g, 0.7),)

    return GraphSpec(
        role="detokenize", binds="tokenizer.decode", bundle=bundle,
        inputs=[IO("tokens", "float32", ("batch", L, c))], outputs=["images"],
        dims={"batch": DimRange.spread(1, max_batch)}, make_inputs=make, description="tokenizer.decode")


def window_draft_spec(bundle: nn.Module, max_batch: int) -> GraphSpec:
    """``draft_window`` = ``WindowDraft.forward``: window [N, w, R], next_pos [N] -> pred [N, 2D + 2] (one
    draft step: the rows of the last w positions -> the next position's z^c, z^u, E^c, E^u; N = samples)."""
    draft = bundle.draft
    w, R, L = draft.window, draft.row_dim, draft.seq_len

    def make(d: dict[str, int], g: torch.Generator) -> tuple[Tensor, ...]:
        n = d["rows"]
        return randn((n, w, R), g), torch.randint(1, L, (n,), generator=g)

    return GraphSpec(
        role="draft_window", binds="draft.forward", bundle=bundle,
        inputs=[IO("window", "float32", ("rows", w, R)), IO("next_pos", "int64", ("rows",))],
        outputs=["pred"], dims={"rows": DimRange.spread(1, max(2, max_batch))}, make_inputs=make,
        description="window draft: the last w positions' rows -> the next position's z (cond, uncond) and E")
