"""MAR's exported graph (``BackboneSpec.graphs``): ``target_step`` = ``MAR.step_net``.

One MAR step is one encoder + decoder forward over what the state knows. The sparse MAE encoder keeps
only the buffer slots and the known tokens; how many depends on the step, so ``MAR.step`` turns the
known mask into the kept indices (``kept_indices``: buffer + known positions in raster order) and
``step_net`` gathers them. The kept count is a dynamic dim (``kept``), not a data-dependent shape
inside the graph. The last decoder block runs only the step's positions as queries.

    inputs   tokens [R, L, c]   committed tokens (zeros where unknown)
             keep [R, kept]     int64, MAR.kept_indices(mask): buffer slots + known positions
             labels [R]         int64 class ids; ``class_num`` = the null condition (fake_latent, CFG)
             positions [R, n]   int64, the tokens this step generates
    outputs  z [R, n, Dd], entropy [R, n] (Eq. 4, penultimate decoder block), entropy_global [R]

R = B, or 2B with CFG ([cond; uncond], the uncond rows with label ``class_num``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from driftar_core.graphs import IO, DimRange, ExportBounds, GraphSpec, randn


def mar_graphs(bundle: Any, bounds: ExportBounds) -> list[GraphSpec]:
    """``target_step`` of a MAR bundle (rows up to ``bounds.max_rows``)."""
    mar = bundle.backbone
    L, c = mar.token_shape
    buf, classes = mar.buffer_size, mar.class_emb.num_embeddings

    def make(d: dict[str, int], g: torch.Generator) -> tuple[Tensor, ...]:
        R, known, n = d["rows"], d["kept"] - buf, d["positions"]
        order = torch.argsort(torch.rand(R, L, generator=g), dim=1)            # a random order per row
        mask = torch.ones(R, L, dtype=torch.bool)
        mask.scatter_(1, order[:, :known], False)                              # `known` tokens known
        tokens = randn((R, L, c), g, 0.7) * (~mask)[..., None]                 # zeros where unknown
        keep = mar.kept_indices(mask)                                          # [R, kept]
        labels = torch.randint(0, classes + 1, (R,), generator=g)              # includes the null label
        positions = order[:, L - n:] if n <= L - known else order[:, :n]       # unknown ones when possible
        return tokens, keep, labels, positions.contiguous()

    return [GraphSpec(
        role="target_step", binds="backbone.step_net", bundle=bundle,
        inputs=[IO("tokens", "float32", ("rows", L, c)), IO("keep", "int64", ("rows", "kept")),
                IO("labels", "int64", ("rows",)), IO("positions", "int64", ("rows", "positions"))],
        outputs=["z", "entropy", "entropy_global"],
        dims={"rows": DimRange.spread(1, bounds.max_rows), "kept": DimRange.spread(buf, buf + L - 1),
              "positions": DimRange.spread(1, L)},
        make_inputs=make, head_rows=bounds.max_rows * L,                     # a step may decode every position
        description="MAR encoder (sparse, kept indices from the host) + decoder; z and E at the step's positions",
        notes=[f"labels == {classes} selects the null condition (fake_latent) for the CFG rows"])]
