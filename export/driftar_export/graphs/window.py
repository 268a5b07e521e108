"""The feature-level window draft's exported graph (driftar_core.method.window_draft).

    draft_window   window [rows, w, R], next_pos [rows] int64 -> pred [rows, 2D + 2]

One draft step: the rows of the last w positions (oldest first) -> the next position's z^c, z^u,
E^c, E^u. The window itself (rows of observed and drafted positions) lives on the host
(runtime/causal_window.py), as the KV caches do for the layer draft; rows = samples (B, not 2B: a
row holds both CFG halves).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from driftar_export.graphs.spec import IO, DimRange, GraphSpec, randn


class WindowDraftGraph(nn.Module):
    def __init__(self, draft: nn.Module):
        super().__init__()
        self.draft = draft

    def forward(self, window: Tensor, next_pos: Tensor) -> Tensor:
        """window [N, w, R], next_pos [N] -> pred [N, 2D + 2]."""
        return self.draft(window, next_pos)


def window_layout(draft: nn.Module) -> dict[str, Any]:
    """What the host needs to keep the window (the manifest's ``causal.draft``)."""
    return {"kind": "window", "window": draft.window, "z_dim": draft.z_dim, "row_dim": draft.row_dim,
            "seq_len": draft.seq_len}


def window_draft_spec(draft: nn.Module, max_batch: int) -> GraphSpec:
    w, R, L = draft.window, draft.row_dim, draft.seq_len

    def make(d: dict[str, int], g: torch.Generator) -> tuple[Tensor, ...]:
        n = d["rows"]
        return randn((n, w, R), g), torch.randint(1, L, (n,), generator=g)

    return GraphSpec(
        role="draft_window", module=WindowDraftGraph(draft).eval(),
        inputs=[IO("window", "float32", ("rows", w, R)), IO("next_pos", "int64", ("rows",))],
        outputs=["pred"], dims={"rows": DimRange.spread(1, max(2, max_batch))}, make_inputs=make,
        description="window draft: the last w positions' rows -> the next position's z (cond, uncond) and E")
