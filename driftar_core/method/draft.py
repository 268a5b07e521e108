"""The draft model of entropy-informed speculative decoding (Drift-AR Eq. 3 + entropy alignment).

docs/method.md "Draft (Eq. 3)": a small causal transformer over the TARGET's features. Output row j predicts
the target feature at position j + 1:

    L_reg = SmoothL1( D(sg z)[:, :-1], sg z[:, 1:] )                       (Eq. 3)

docs/method.md "Draft (Eq. 3)", defect B5: the paper's entropy loss aligns the DRAFT's
causal-normalised entropy (Eq. 4 on its own last-block causal attention) with the target's, so the
draft is not over-confident. The official code instead maximises the target's entropy (Eq. 5),
which drives E to 1 everywhere; that is not done here.

    L_ent = mean_j | E_draft[j] - sg E_target[j + 1] |      over rows j that see >= 2 keys

The pairing follows the regression: draft row j is the draft's guess for position j + 1, so its
attention entropy is compared with the target's entropy AT j + 1 (the entropy the target reports
with z_{j+1}; docs/method.md "Early stop" compares the two there). Row 0 sees one key (E = 0 by definition)
and is skipped.

    L_draft = L_reg + entropy_weight * L_ent

Sequences are in GENERATION order (raster for NextStep-1; the caller permutes MAR's random order).
Blocks use timm's ViT naming (``norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2``) so
:meth:`DraftModel.init_from_blocks` can copy the first k blocks and the final norm of a trained
target (as the official code initialises its draft; docs/method.md "Two-phase training": after the target is
loaded, never from random blocks, issue D2). The output map is residual and zero-initialised
(pred = z + head(norm(h))), so an untrained draft predicts "next feature = current feature".

Optional EAGLE-style token input (``token_dim``; docs/method.md "Running ahead"): the token sampled at position j
is embedded (zero-init Linear c -> D) and added to z_j, because z_{j+1} depends on that sampled
token, which z_j alone does not determine. Running ahead on its own outputs with a KV cache
(``propose``) is the speculative sampler's job (a later issue), as is self-feed training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from driftar_core.method.configs import DraftConfig  # noqa: F401  (re-export)
from driftar_core.method.entropy import attention_entropy


# -------------------------------------------------------------------------------------------------
# A timm-named pre-LN ViT block with a causal mask
# -------------------------------------------------------------------------------------------------


def causal_mask(length: int, device: torch.device | str | None = None) -> Tensor:
    """[L, L] bool, True where row i may see key j (j <= i)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """x [B, L, D] -> (out [B, L, D], causal attention [B, H, L, L] or None)."""
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        if not need_weights:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)      # [B, H, L, d]
            attn = None
        else:
            logits = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5           # [B, H, L, L]
            logits = logits.masked_fill(~causal_mask(x.shape[1], x.device), float("-inf"))
            attn = logits.softmax(-1)                                          # [B, H, L, L]
            out = attn @ v                                                     # [B, H, L, d]
        return self.proj(rearrange(out, "b h l d -> b l (h d)")), attn         # [B, L, D]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """x + attn(norm1(x)), then x + mlp(norm2(x)); state-dict keys as timm's ``Block``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        h, attn = self.attn(self.norm1(x), need_weights)                       # [B, L, D]
        x = x + h
        return x + self.mlp(self.norm2(x)), attn                               # [B, L, D]


# -------------------------------------------------------------------------------------------------
# The draft
# -------------------------------------------------------------------------------------------------


@dataclass
class DraftOutput:
    """pred: [B, L, D], row j = the draft's guess of the target feature at j + 1.
    attn: [B, H, L, L] last-block causal attention (when requested), else None."""

    pred: Tensor
    attn: Tensor | None = None


class DraftModel(nn.Module):
    """Causal draft over target features z [B, L, D] (Eq. 3); see the module docstring."""

    def __init__(self, config: DraftConfig | None = None):
        super().__init__()
        cfg = config if config is not None else DraftConfig()
        self.config = cfg
        self.token_embed = None
        if cfg.token_dim is not None:
            self.token_embed = nn.Linear(cfg.token_dim, cfg.dim)
            nn.init.zeros_(self.token_embed.weight)
            nn.init.zeros_(self.token_embed.bias)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.norm_eps)
                                    for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.dim)
        nn.init.zeros_(self.head.weight)                                       # residual: pred = z at init
        nn.init.zeros_(self.head.bias)

    def forward(self, z: Tensor, tokens: Tensor | None = None, return_attn: bool = False) -> DraftOutput:
        """z [B, L, D] (+ tokens [B, L, c]) -> :class:`DraftOutput` (pred [B, L, D], attn [B, H, L, L])."""
        h = z
        if tokens is not None:
            if self.token_embed is None:
                raise ValueError("this draft was built without token input (DraftConfig.token_dim is None)")
            h = h + self.token_embed(tokens)                                   # [B, L, D]
        attn = None
        for i, block in enumerate(self.blocks):
            h, a = block(h, need_weights=return_attn and i == len(self.blocks) - 1)  # [B, L, D]
            attn = a if a is not None else attn
        return DraftOutput(pred=z + self.head(self.norm(h)), attn=attn)        # [B, L, D]

    @staticmethod
    def entropy(attn: Tensor) -> Tensor:
        """Causal-normalised entropy (Eq. 4) of the last-block attention [B, H, L, L] -> E [B, L]."""
        return attention_entropy(attn, causal_mask(attn.shape[-1], attn.device)[None])

    def loss_terms(self, z: Tensor, target_entropy: Tensor | None = None,
                   tokens: Tensor | None = None) -> dict[str, Tensor]:
        """z [B, L, D], target_entropy [B, L] (target's E), tokens [B, L, c] -> {"loss", "reg", "ent"}.

        z and target_entropy are detached here: the draft loss trains only the draft.
        """
        z = z.detach()
        out = self(z, tokens, return_attn=target_entropy is not None)
        reg = F.smooth_l1_loss(out.pred[:, :-1].float(), z[:, 1:].float(),
                               beta=self.config.smooth_l1_beta)                # Eq. 3
        terms = {"reg": reg}
        loss = reg
        if target_entropy is not None and z.shape[1] > 2:
            e_draft = self.entropy(out.attn)                                   # [B, L]
            ent = (e_draft[:, 1:-1] - target_entropy.detach().float()[:, 2:]).abs().mean()
            terms["ent"] = ent
            terms["draft_entropy_mean"] = e_draft[:, 1:].mean().detach()
            loss = loss + self.config.entropy_weight * ent
        terms["loss"] = loss
        return terms

    def loss(self, z: Tensor, target_entropy: Tensor | None = None, tokens: Tensor | None = None) -> Tensor:
        """Scalar L_reg + lambda * L_ent (see :meth:`loss_terms`)."""
        return self.loss_terms(z, target_entropy, tokens)["loss"]

    # ---- initialisation from a trained target --------------------------------------------------------

    @torch.no_grad()
    def init_from_blocks(self, blocks: Sequence[nn.Module], norm: nn.Module | None = None) -> None:
        """Copy the first ``depth`` of ``blocks`` (and ``norm`` into the final norm) by state dict.

        Any module class works if its state-dict keys and shapes equal this draft's block (timm ViT
        naming); anything else fails with the keys that differ, so nothing is dropped silently.
        """
        if len(blocks) < len(self.blocks):
            raise ValueError(f"the draft has {len(self.blocks)} blocks but only {len(blocks)} were given")
        pairs = [(f"block {i}", self.blocks[i], blocks[i]) for i in range(len(self.blocks))]
        if norm is not None:
            pairs.append(("norm", self.norm, norm))
        for what, dst, src in pairs:
            _copy_state(dst, src, what)


def _copy_state(dst: nn.Module, src: nn.Module, what: str) -> None:
    want, have = dst.state_dict(), src.state_dict()
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    shapes = [f"{k}: {tuple(have[k].shape)} vs {tuple(want[k].shape)}"
              for k in set(want) & set(have) if have[k].shape != want[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"cannot copy the target's {what} into the draft: missing keys {missing}, "
                         f"unexpected keys {unexpected}, shape mismatches {shapes} "
                         "(DraftConfig dim/num_heads/mlp_ratio/qkv_bias must match the target)")
    dst.load_state_dict({k: v.to(want[k].dtype) for k, v in have.items()})
