"""The window draft on the host (driftar_core.method.window_draft.WindowDraft's generation API, numpy).

The rows of observed (target) and drafted positions live here; each draft step is one call of the
``draft_window`` graph. ``observe`` / ``propose`` follow WindowDraft line for line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from driftar_export.runtime.graphs import GraphSet


@dataclass
class WindowState:
    rows: np.ndarray        # [B, w - 1 + L, R], position p at index p + w - 1, zeros before position 0
    n: int                  # observed positions
    cfg: bool


class WindowDraftHost:
    feature_level = True

    def __init__(self, graphs: GraphSet, layout: dict[str, Any]):
        self.graphs = graphs
        self.w, self.D, self.R, self.L = layout["window"], layout["z_dim"], layout["row_dim"], layout["seq_len"]

    def new_state(self, labels: np.ndarray, cfg: bool) -> WindowState:
        return WindowState(rows=np.zeros((len(labels), self.w - 1 + self.L, self.R), np.float32), n=0, cfg=cfg)

    def observe(self, state: WindowState, z: np.ndarray, e: np.ndarray, noise: np.ndarray) -> None:
        """Target z [R', m, D], E [R', m], noise [B, m, c] of the next m committed positions."""
        B, m = noise.shape[:2]
        zc, zu = (z[:B], z[B:]) if state.cfg else (z, z)
        ec, eu = (e[:B], e[B:]) if state.cfg else (e, e)
        i = state.n + self.w - 1
        state.rows[:, i:i + m] = np.concatenate([zc, zu, ec[..., None], eu[..., None], noise], -1)
        state.n += m

    def propose(self, state: WindowState, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """noise [B, k, c] of positions n .. n + k - 1 -> z [R', k, D], E [R', k]."""
        B, k, _ = noise.shape
        window = state.rows[:, state.n - 1:state.n - 1 + self.w]                 # [B, w, R]
        preds = []
        for m in range(k):
            pos = np.full((B,), state.n + m, np.int64)
            pred = self.graphs.run("draft_window", {"window": np.ascontiguousarray(window), "next_pos": pos})["pred"]
            preds.append(pred)
            if m + 1 < k:
                row = np.concatenate([pred, noise[:, m]], -1)[:, None]
                window = np.concatenate([window[:, 1:], row], 1)
        pred = np.stack(preds, 1)                                                 # [B, k, 2D + 2]
        D = self.D
        zc, zu, ec, eu = pred[..., :D], pred[..., D:2 * D], pred[..., 2 * D], pred[..., 2 * D + 1]
        if state.cfg:
            return np.concatenate([zc, zu]), np.concatenate([ec, eu])
        return zc, ec
