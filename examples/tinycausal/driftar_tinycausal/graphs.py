"""The example's exported graphs (``BackboneSpec.graphs``, docs/plugins.md "Export"): ``forward_rows`` of
the target and of the draft, the one call each makes into its network while generating.

    target_rows / draft_rows   labels [R] (the null class for CFG rows), tokens [R, L - 1, c]
                               -> z [R, L, D], entropy [R, L]
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from driftar_core.graphs import IO, DimRange, ExportBounds, GraphSpec


def graphs(bundle: Any, bounds: ExportBounds) -> list[GraphSpec]:
    L, c = bundle.backbone.token_shape
    classes = bundle.config.class_num

    def make(dims: dict[str, int], g: torch.Generator) -> tuple[Tensor, ...]:
        R = dims["rows"]
        return torch.randint(0, classes + 1, (R,), generator=g), torch.randn(R, L - 1, c, generator=g) * 0.7

    def spec(role: str, owner: str) -> GraphSpec:
        return GraphSpec(role=role, binds=f"{owner}.forward_rows", bundle=bundle,
                         inputs=[IO("labels", "int64", ("rows",)), IO("tokens", "float32", ("rows", L - 1, c))],
                         outputs=["z", "entropy"], dims={"rows": DimRange.spread(1, bounds.max_rows)},
                         make_inputs=make, description=f"{owner}: every row's z and E over the token buffer")

    return [spec("target_rows", "backbone")] + ([spec("draft_rows", "draft")] if bundle.draft is not None else [])
