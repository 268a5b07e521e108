"""The example backbone: a tiny class-conditional causal transformer over patch tokens.

Input row r of a sequence is [class token, x_0, ..., x_{r-1}]; output row r is z_r, the head's
condition for token r. No KV cache: a step re-reads the committed tokens, so ``verify`` (k drafts in
one forward) and ``rollback`` (forget the last m tokens) are exact by construction. ``forward_rows``
is the one call generation makes into the network, so it is also the exported graph (graphs.py). E is the
causal-normalised entropy of the penultimate block's attention (driftar's ``attention_entropy``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from driftar_core.interfaces import Step, StepOutput, TrainOutput
from driftar_core.method.entropy import attention_entropy

from driftar_tinycausal.config import TinyCausalConfig


class Block(nn.Module):
    """Pre-LN causal self-attention + MLP; returns the head-averaged entropy of its attention on request."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor, entropy: bool = False) -> tuple[Tensor, Tensor | None]:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()            # [T, T]
        att = (q @ k.transpose(-1, -2) / math.sqrt(D // self.heads)).masked_fill(~causal, float("-inf"))
        att = att.softmax(-1)                                                          # [B, h, T, T]
        x = x + self.proj((att @ v).transpose(1, 2).reshape(B, T, D))                  # [B, T, D]
        x = x + self.mlp(self.ln2(x))
        return x, attention_entropy(att, causal[None]) if entropy else None            # E [B, T]


@dataclass
class State:
    labels: Tensor          # [B'] (B' = 2B with CFG: the null class second)
    tokens: Tensor          # [B, L, c] committed tokens (cond rows; the uncond rows read the same)
    n: int                  # tokens committed


class TinyCausal(nn.Module):
    """Satisfies driftar_core.interfaces.SpeculativeBackbone; with ``depth`` < config.depth it is the draft."""

    def __init__(self, cfg: TinyCausalConfig, depth: int | None = None):
        super().__init__()
        L, c = cfg.seq_len, cfg.token_dim
        self.token_shape, self.z_dim = (L, c), cfg.width
        self.null, self.label_drop_prob = cfg.class_num, cfg.label_drop_prob
        self.tok = nn.Linear(c, cfg.width)
        self.cls = nn.Embedding(cfg.class_num + 1, cfg.width)                          # last row: null class
        self.pos = nn.Parameter(torch.randn(L, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.num_heads) for _ in range(depth or cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)

    @property
    def device(self) -> torch.device:
        return self.pos.device

    def forward_rows(self, labels: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """labels [B], tokens [B, m, c] (m < L) -> z [B, m + 1, D], E [B, m + 1] for rows 0..m."""
        x = torch.cat([self.cls(labels)[:, None], self.tok(tokens)], 1)                # [B, m+1, D]
        x = x + self.pos[: x.shape[1]]
        ent_block, ent = max(len(self.blocks) - 2, 0), None                            # the penultimate block
        for i, blk in enumerate(self.blocks):
            x, e = blk(x, entropy=i == ent_block)
            ent = e if e is not None else ent
        return self.norm(x), ent

    # ---- training ------------------------------------------------------------------------------

    def forward_train(self, tokens: Tensor, cond: Tensor, generator: torch.Generator | None = None) -> TrainOutput:
        """tokens [B, L, c], labels [B] -> z, E [B, L]; labels drop to the null class (CFG)."""
        drop = torch.rand(cond.shape, generator=generator, device=cond.device) < self.label_drop_prob
        labels = torch.where(drop, torch.full_like(cond, self.null), cond) if self.training else cond
        z, ent = self.forward_rows(labels, tokens[:, :-1])                             # [B, L, D], [B, L]
        return TrainOutput(z=z, loss_mask=z.new_ones(z.shape[:2]), entropy=ent, cond=labels)

    # ---- generation: one token per step, raster order ----------------------------------------

    def new_state(self, cond: Tensor, num_iter: int | None = None, cfg: bool = False,
                  generator: torch.Generator | None = None) -> State:
        labels = torch.cat([cond, torch.full_like(cond, self.null)]) if cfg else cond
        return State(labels, torch.zeros(len(cond), *self.token_shape, device=cond.device, dtype=self.pos.dtype), 0)

    def plan(self, state: State) -> list[Step]:
        B, L = state.tokens.shape[0], self.token_shape[0]
        return [Step(torch.full((B, 1), j, device=state.tokens.device), (j + 1) / L) for j in range(L)]

    def _rows(self, state: State, upto: int) -> tuple[Tensor, Tensor]:
        """z, E of rows 0..upto. The attention is causal, so every row is computed over the whole token
        buffer (zeros past n do not reach rows <= n): one fixed-shape call, which is the exported graph."""
        reps = len(state.labels) // len(state.tokens)                                  # 2 with CFG
        z, ent = self.forward_rows(state.labels, state.tokens[:, :-1].repeat(reps, 1, 1))  # [B', L, D], [B', L]
        return z[:, :upto + 1], ent[:, :upto + 1]

    def step(self, state: State, positions: Tensor) -> StepOutput:
        """positions [B, 1] = n -> z [B', 1, D], E [B', 1]."""
        if not bool((positions == state.n).all()):
            raise ValueError(f"tinycausal decodes in raster order: expected position {state.n}")
        z, ent = self._rows(state, state.n)
        return StepOutput(z=z[:, -1:], entropy=ent[:, -1:])

    def commit(self, state: State, positions: Tensor, tokens: Tensor) -> None:
        m = tokens.shape[1]
        state.tokens[:, state.n:state.n + m] = tokens[: len(state.tokens)]
        state.n += m

    def tokens(self, state: State) -> Tensor:
        return state.tokens

    def verify(self, state: State, tokens: Tensor) -> StepOutput:
        """drafts [B, k, c] appended -> z [B', k + 1, D], E [B', k + 1] for positions n .. n + k, ONE forward."""
        n, k = state.n, tokens.shape[1]
        self.commit(state, None, tokens)
        z, ent = self._rows(state, n + k)
        return StepOutput(z=z[:, n:], entropy=ent[:, n:])

    def rollback(self, state: State, m: int) -> None:
        state.n -= m
        state.tokens[:, state.n:] = 0


class TinyDraft(TinyCausal):
    """The draft: the target's first ``drift_ar.draft.depth`` blocks (a TokenDraft), trained by Eq. 3 +
    entropy alignment (a TrainableDraft) on the target's stop-gradient features."""

    def __init__(self, cfg: TinyCausalConfig):
        super().__init__(cfg, depth=cfg.drift_ar.draft.depth)
        self.entropy_weight = cfg.drift_ar.draft.entropy_weight

    @torch.no_grad()
    def init_from_target(self, target: TinyCausal) -> None:
        own = self.state_dict()
        self.load_state_dict({k: v for k, v in target.state_dict().items() if k in own})

    def loss_terms(self, z: Tensor, target_entropy: Tensor | None = None, *, tokens: Tensor,
                   cond: Tensor) -> dict[str, Tensor]:
        """sg target z [B, L, D], E [B, L], the tokens [B, L, c] and labels the target read -> losses."""
        z_d, e_d = self.forward_rows(cond, tokens[:, :-1])
        reg = F.smooth_l1_loss(z_d, z.detach())
        terms = {"reg": reg, "loss": reg}
        if target_entropy is not None:
            ent = (e_d[:, 1:] - target_entropy.detach()[:, 1:]).abs().mean()           # row 0 sees one key
            terms.update(ent=ent, loss=reg + self.entropy_weight * ent)
        return terms


class FeatureMap(nn.Module):
    """phi: tokens [M, c] -> features [M, D], the drift loss's frozen feature space: the target's token
    embedding and penultimate block on a one-token sequence (filled from the trained target)."""

    def __init__(self, target: TinyCausal):
        super().__init__()
        self.tok = nn.Linear(*target.tok.weight.shape[::-1])
        self.block = Block(target.z_dim, target.blocks[0].heads)
        self.requires_grad_(False)

    @torch.no_grad()
    def copy_from(self, target: TinyCausal) -> None:
        self.tok.load_state_dict(target.tok.state_dict())
        self.block.load_state_dict(target.blocks[max(len(target.blocks) - 2, 0)].state_dict())

    def forward(self, tokens: Tensor) -> Tensor:
        return self.block(self.tok(tokens)[:, None])[0][:, 0]                          # [M, D]

    def train(self, mode: bool = True) -> "FeatureMap":
        return super().train(False)
