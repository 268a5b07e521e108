"""A feature-level draft that runs ahead WITHOUT a head call per drafted token (docs/method.md "Draft (Eq. 3)").

docs/method.md "Running ahead" asks for an EAGLE-style draft: its input is the target's feature for committed
positions and its own predicted feature for drafted ones, plus the token. With a 1-NFE head and
noise drawn once per position, the token at position p is a deterministic function of what the head
sees there, x_p = g(mu(z_p) + sigma(E_p) eps_p; z_p, E_p) (with CFG, of both rows z_p^c, z_p^u), so
the draft can take (z_p, E_p, eps_p) in place of x_p and learn the head's effect itself. The drafted
tokens then come from ONE batched head call per round over the k drafted features, instead of one
head call per drafted token: at the sizes driftar runs on a CPU a head call costs about as much as a
draft step, so this halves the cost of a drafted token.

The model (``WindowDraft``): a residual MLP over a window of the last ``window`` positions' rows

    row_p = [z_p^c, z_p^u, E_p^c, E_p^u, eps_p]                    (no CFG: z^u = z^c, E^u = E^c)
    h     = W_in concat(row_{p-w+1} .. row_p) + P[p + 1]           # P: learned position embedding
    h     = h + MLP_j(LN(h))                                       # ``depth`` blocks
    (dz^c, dz^u, e^c, e^u) = W_out LN(h)                           # zero-init W_out
    z_{p+1} = z_p + dz,   E_{p+1} = sigmoid(e + 1)

An MLP over a fixed window instead of attention over the whole prefix, because a draft step must be
a few kernel calls: on the reference VM a 1-layer attention draft step cost ~0.6 ms, the size of a
head call, and this one ~0.15 ms. The window is the token grid's width on the digits (8), so the
row above the next token is in view. Rows of committed positions are the TARGET's features from
the verify pass (``observe``); rows of drafted positions are the draft's own (``propose``), so
between rounds nothing is rolled back. Positions before the first token are zero rows.

It is trained by self-distillation from the finished Drift-AR model (method/window_draft_train.py):
rollouts sampled with the model's own sampler record eps, the target's teacher-forced features give
(z, E) at every position, and the draft is unrolled on its own outputs ("self-feed", docs/method.md "Running ahead")
against Eq. 3's regression, the draft-target entropy alignment and the token the head makes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from driftar_core.interfaces import StepOutput
from driftar_core.method.configs import WindowDraftConfig

E_BIAS = 1.0      # sigmoid(1) = 0.73: an untrained draft reports about the mean target entropy (0.74 on the digits)


@dataclass
class WindowDraftState:
    """rows [B, w - 1 + L, R]: row of position p at index p + w - 1 (zeros before position 0);
    n: positions whose rows are the target's (the committed tokens); cfg: rows [cond; uncond] in z."""

    rows: Tensor
    n: int
    cfg: bool


class WindowDraft(nn.Module):
    """See the module docstring. z_dim = D, noise_dim = c (the head's noise per token), seq_len = L."""


    def __init__(self, z_dim: int, noise_dim: int, seq_len: int, config: WindowDraftConfig | None = None):
        super().__init__()
        cfg = self.config = config if config is not None else WindowDraftConfig()
        self.z_dim, self.noise_dim, self.seq_len, self.window = z_dim, noise_dim, seq_len, cfg.window
        self.row_dim = 2 * z_dim + 2 + noise_dim
        W = cfg.width
        self.in_proj = nn.Linear(cfg.window * self.row_dim, W)
        self.pos_embed = nn.Embedding(seq_len, W)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(W), nn.Linear(W, W), nn.SiLU(), nn.Linear(W, W))
                                    for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(W)
        self.out_proj = nn.Linear(W, 2 * z_dim + 2)
        nn.init.zeros_(self.out_proj.weight)   # an untrained draft predicts "next feature = current feature"
        nn.init.zeros_(self.out_proj.bias)

    # ---- the network -----------------------------------------------------------------------------

    def forward(self, window: Tensor, next_pos: Tensor) -> Tensor:
        """window [N, w, R] (oldest first, last = position p), next_pos [N] = p + 1 -> row of p + 1
        without its eps [N, 2D + 2]."""
        h = self.in_proj(window.flatten(1)) + self.pos_embed(next_pos)        # [N, W]
        for block in self.blocks:
            h = h + block(h)                                                   # [N, W]
        out = self.out_proj(self.norm(h))                                      # [N, 2D + 2]
        D2 = 2 * self.z_dim
        z = window[:, -1, :D2] + out[:, :D2]                                   # [N, 2D] residual on z_p
        return torch.cat([z, torch.sigmoid(out[:, D2:] + E_BIAS)], dim=-1)     # [N, 2D + 2]

    def rows_from(self, out: StepOutput, noise: Tensor, cfg: bool) -> Tensor:
        """Target z [B', m, D], E [B', m] and eps [B, m, c] of m positions -> rows [B, m, R]."""
        B = noise.shape[0]
        z, e = out.z, out.entropy
        if e is None:
            raise ValueError("the window draft needs the target's entropy E (a backbone built with it)")
        zc, zu = (z[:B], z[B:]) if cfg else (z, z)                             # [B, m, D] each
        ec, eu = (e[:B], e[B:]) if cfg else (e, e)                             # [B, m] each
        return torch.cat([zc, zu, ec[..., None].to(z.dtype), eu[..., None].to(z.dtype), noise.to(z.dtype)], -1)

    def condition(self, pred: Tensor, cfg: bool) -> StepOutput:
        """Predictions [..., 2D + 2] (``forward``'s rows) -> the head's input: z [B', ..., D], E [B', ...]
        with B' = [cond; uncond] rows when ``cfg``, else the cond rows."""
        D = self.z_dim
        zc, zu, ec, eu = pred[..., :D], pred[..., D:2 * D], pred[..., 2 * D], pred[..., 2 * D + 1]
        if cfg:
            return StepOutput(z=torch.cat([zc, zu]), entropy=torch.cat([ec, eu]))
        return StepOutput(z=zc, entropy=ec)

    # ---- generation ------------------------------------------------------------------------------

    def new_state(self, cond: Any, num_iter: int | None = None, cfg: bool = False,
                  generator: torch.Generator | None = None) -> WindowDraftState:
        """An empty window for len(cond) samples (the speculative sampler's draft protocol)."""
        if num_iter is not None and num_iter != self.seq_len:
            raise ValueError(f"the window draft was built for L = {self.seq_len} tokens, got num_iter {num_iter}")
        weight = self.in_proj.weight
        rows = weight.new_zeros(len(cond), self.window - 1 + self.seq_len, self.row_dim)
        return WindowDraftState(rows=rows, n=0, cfg=cfg)

    @torch.no_grad()
    def observe(self, state: WindowDraftState, out: StepOutput, noise: Tensor) -> None:
        """Record the target's z [B', m, D], E [B', m] and the noise [B, m, c] of the next m committed positions."""
        m = noise.shape[1]
        if state.n + m > self.seq_len:
            raise ValueError(f"cannot observe {m} positions after {state.n} of {self.seq_len}")
        i = state.n + self.window - 1
        state.rows[:, i:i + m] = self.rows_from(out, noise, state.cfg)
        state.n += m

    @torch.no_grad()
    def propose(self, state: WindowDraftState, noise: Tensor) -> StepOutput:
        """Draft z, E for the k positions n .. n + k - 1 after the n observed ones, each step fed the
        previous one (noise [B, k, c]: eps of those positions) -> z [B', k, D], E [B', k]."""
        B, k, _ = noise.shape
        if state.n < 1:
            raise ValueError("the window draft needs the target's features of at least one position: "
                             "observe the first target step before proposing")
        if state.n + k > self.seq_len:
            raise ValueError(f"cannot draft {k} positions after {state.n} of {self.seq_len}")
        window = state.rows[:, state.n - 1:state.n - 1 + self.window]         # [B, w, R] positions n-w .. n-1
        pos = torch.full((B,), state.n, dtype=torch.long, device=window.device)
        preds = []
        for m in range(k):
            pred = self(window, pos + m)                                       # [B, 2D + 2] position n + m
            preds.append(pred)
            if m + 1 < k:
                row = torch.cat([pred, noise[:, m].to(pred.dtype)], -1)        # [B, R]
                window = torch.cat([window[:, 1:], row[:, None]], 1)           # slide by one
        return self.condition(torch.stack(preds, 1), state.cfg)                # z [B', k, D], E [B', k]
