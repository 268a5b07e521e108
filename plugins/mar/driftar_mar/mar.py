"""MAR: the masked autoregressive backbone (random-order, bidirectional, MAE-style encoder/decoder).

Follows MAR (Li et al. 2024, arXiv 2406.11838, sections 3.3-3.5) and LTH14/mar models/mar.py
(docs/backbones.md "MAR", "Porting to CPU and tiny sizes"), written for driftar and its seams:

* ``forward_train``: per-sample random order, one mask ratio per batch from a truncated normal on
  [mask_ratio_min, 1] (mean 1, std 0.25), the first ceil(L * ratio) positions of each order masked;
  the head loss counts on masked tokens only (``loss_mask``).
* Generation is split into ``new_state`` / ``plan`` / ``step`` / ``commit`` so that the sampling
  loop (driftar_core.sampling) stays outside the network. ``plan`` is MAR's cosine mask schedule.
* Encoder: class embedding copied into ``buffer_size`` slots, z_proj on the tokens, learned
  position embedding, z_proj_ln, then only buffer + visible tokens go through the blocks (sparse
  MAE encoder; the masked count is shared by the batch). Decoder: mask_token padding, its own
  position embedding, blocks, decoder_norm, buffer stripped, diffusion_pos_embed_learned added.
* Entropy (Drift-AR Eq. 4): the decoder's penultimate block computes its softmax explicitly and
  returns the probabilities; E of each content row is taken over ALL buffer + L keys, normalised by
  log(buffer + L), since every key is visible to every row of a bidirectional block (docs/method.md
  "Entropy E (Eq. 4)": "log |visible| under any other mask"). We keep the buffer columns rather than dropping and
  renormalising them (the official Drift-AR code does that): a row that mostly attends to the class
  buffer is a confident, class-driven prediction and should read as low entropy, not as the
  entropy of its small leftover mass blown up by renormalising. Same forward as z, no extra pass.

Blocks are pre-LN ViT blocks with timm 0.9 key names; SDPA everywhere except that one block.
No hard-coded devices: everything follows the parameters or the inputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from driftar_core.interfaces import Step, StepOutput, TrainOutput
from driftar_core.method.entropy import attention_entropy
from driftar_core.schedules import cosine_mask_lengths
from driftar_mar.config import MARConfig

LN_EPS = 1e-6            # MAR: partial(nn.LayerNorm, eps=1e-6) everywhere
INIT_STD = 0.02          # embeddings, position embeddings, mask token, fake latent
MASK_RATIO_STD = 0.25    # truncated normal of the training mask ratio, centred at 1.0


# -------------------------------------------------------------------------------------------------
# Transformer block (timm 0.9 Block naming: norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2)
# -------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads, self.attn_drop = num_heads, attn_drop
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, return_attn: bool = False,
                query_index: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """x [B, S, D] -> out [B, S, D], attention probabilities [B, H, S, S] if return_attn else None.

        query_index [B, n]: only those rows are queries (keys and values are all S rows) -> out [B, n, D];
        the same numbers as the full forward's rows, for a fraction of the cost.
        """
        if query_index is None:
            q, k, v = rearrange(self.qkv(x), "b s (three h d) -> three b h s d", three=3, h=self.num_heads)
        else:
            D = x.shape[-1]
            xq = torch.gather(x, 1, query_index[..., None].expand(-1, -1, D))  # [B, n, D]
            q = F.linear(xq, self.qkv.weight[:D], self.qkv.bias[:D])           # [B, n, D]
            q = rearrange(q, "b n (h d) -> b h n d", h=self.num_heads)
            k, v = rearrange(F.linear(x, self.qkv.weight[D:], self.qkv.bias[D:]),
                             "b s (two h d) -> two b h s d", two=2, h=self.num_heads)
        p = self.attn_drop if self.training else 0.0
        attn = None
        if return_attn:                                                         # explicit softmax
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)     # [B, H, S, S]
            out = F.dropout(attn, p, self.training) @ v                         # [B, H, S, d]
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)          # [B, H, S, d]
        out = rearrange(out, "b h s d -> b s (h d)")                            # [B, S, D]
        return self.proj_drop(self.proj(out)), attn


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1, self.act, self.drop1 = nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop)
        self.fc2, self.drop2 = nn.Linear(hidden, dim), nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))          # [B, S, D]


class Block(nn.Module):
    """Pre-LN ViT block, bidirectional (no attention mask)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, attn_drop: float, proj_drop: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads, attn_drop, proj_drop)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), proj_drop)

    def forward(self, x: Tensor, return_attn: bool = False,
                query_index: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """x [B, S, D] -> [B, S, D]; with query_index [B, n] only those rows are computed -> [B, n, D]."""
        h, attn = self.attn(self.norm1(x), return_attn, query_index)
        if query_index is not None:
            x = torch.gather(x, 1, query_index[..., None].expand(-1, -1, x.shape[-1]))  # [B, n, D]
        x = x + h                                                               # [B, S | n, D]
        return x + self.mlp(self.norm2(x)), attn                                # [B, S | n, D]


# -------------------------------------------------------------------------------------------------
# Generation state and the cosine schedule
# -------------------------------------------------------------------------------------------------


@dataclass
class MARState:
    """What MAR knows during one generation (the cond half only; CFG doubling happens in ``step``).

    labels [B] long; tokens [B, L, c] (zeros where unknown); mask [B, L] bool, True = still unknown;
    orders [B, L] long, a random permutation per sample (the first entries are generated last).
    """

    labels: Tensor
    tokens: Tensor
    mask: Tensor
    orders: Tensor
    num_iter: int
    cfg: bool



def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform [0, 1) draws from ``generator`` (on its own device) or the global RNG, moved to device."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


# -------------------------------------------------------------------------------------------------
# The backbone
# -------------------------------------------------------------------------------------------------


class MAR(nn.Module):
    """Masked autoregressive backbone; satisfies driftar_core.interfaces.ARBackbone."""

    def __init__(self, config: MARConfig):
        super().__init__()
        cfg = self.config = config
        L, c, D, Dd, buf = cfg.seq_len, cfg.token_dim, cfg.encoder_embed_dim, cfg.decoder_embed_dim, cfg.buffer_size
        self.seq_len, self.buffer_size, self.token_embed_dim = L, buf, c
        self.token_shape, self.z_dim = (L, c), Dd
        self.label_drop_prob, self.mask_ratio_min = cfg.label_drop_prob, cfg.mask_ratio_min

        # class embedding and the learned null condition for CFG
        self.class_emb = nn.Embedding(cfg.class_num, D)
        self.fake_latent = nn.Parameter(torch.zeros(1, D))

        # encoder
        self.z_proj = nn.Linear(c, D)
        self.z_proj_ln = nn.LayerNorm(D, eps=LN_EPS)
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, buf + L, D))
        self.encoder_blocks = nn.ModuleList([
            Block(D, cfg.encoder_num_heads, cfg.mlp_ratio, cfg.attn_dropout, cfg.proj_dropout)
            for _ in range(cfg.encoder_depth)])
        self.encoder_norm = nn.LayerNorm(D, eps=LN_EPS)

        # decoder
        self.decoder_embed = nn.Linear(D, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, buf + L, Dd))
        self.decoder_blocks = nn.ModuleList([
            Block(Dd, cfg.decoder_num_heads, cfg.mlp_ratio, cfg.attn_dropout, cfg.proj_dropout)
            for _ in range(cfg.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(Dd, eps=LN_EPS)
        self.diffusion_pos_embed_learned = nn.Parameter(torch.zeros(1, L, Dd))
        self.entropy_block = max(cfg.decoder_depth - 2, 0)                      # penultimate decoder block
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """MAR: N(0, 0.02) embeddings; xavier_uniform Linear with zero bias; LayerNorm (1, 0)."""
        for p in (self.class_emb.weight, self.fake_latent, self.mask_token, self.encoder_pos_embed_learned,
                  self.decoder_pos_embed_learned, self.diffusion_pos_embed_learned):
            nn.init.normal_(p, std=INIT_STD)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def device(self) -> torch.device:
        return self.fake_latent.device

    # ---- the MAE encoder / decoder ---------------------------------------------------------------

    def forward_mae(self, tokens: Tensor, mask: Tensor, class_embedding: Tensor) -> tuple[Tensor, Tensor]:
        """tokens [B, L, c], mask [B, L] bool (True = masked; same count per row), class_embedding [B, D]
        -> z [B, L, Dd] (head condition), E [B, L] (penultimate decoder block entropy)."""
        return self.forward_kept(tokens, self.kept_indices(mask), class_embedding)

    def kept_indices(self, mask: Tensor) -> Tensor:
        """mask [B, L] bool (True = masked; same count per row) -> keep [B, buf + visible] long: the
        buffer slots and the visible tokens, as indices into the buffer + L sequence, in raster order."""
        B, L = mask.shape
        n_masked = mask.sum(dim=1)
        if bool((n_masked != n_masked[0]).any()):
            raise ValueError("MAR's sparse encoder needs the same number of masked tokens in every row")
        n_keep = self.buffer_size + L - int(n_masked[0])
        dropped = torch.cat([mask.new_zeros(B, self.buffer_size), mask], dim=1)  # [B, buf+L]
        return torch.argsort(dropped.to(torch.int8), dim=1, stable=True)[:, :n_keep]  # [B, n_keep]

    def forward_kept(self, tokens: Tensor, keep: Tensor, class_embedding: Tensor,
                     query: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``forward_mae`` with the kept positions given: tokens [B, L, c], keep [B, n_keep] long
        (``kept_indices``), class_embedding [B, D] -> z [B, L, Dd], E [B, L]. No data-dependent shapes,
        so it exports with a dynamic n_keep (driftar-export's ``target_step`` graph).

        query [B, n] (token positions): z only there -> z [B, n, Dd] (E stays [B, L]). The last decoder
        block then runs only those rows as queries: the same numbers as the full forward's rows (z of
        the other positions is never used by a sampling step), about a quarter less AR compute on the
        tiny model. Applies when the entropy block is not the last one (its rows feed E's image mean).
        """
        B, L, _ = tokens.shape
        buf = self.buffer_size

        # encoder: buffer slots hold the class embedding; only buffer + visible tokens are kept
        x = self.z_proj(tokens)                                                 # [B, L, D]
        x = torch.cat([class_embedding[:, None].expand(-1, buf, -1), x], dim=1)  # [B, buf+L, D]
        x = self.z_proj_ln(x + self.encoder_pos_embed_learned)                  # [B, buf+L, D]
        x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))     # [B, n_keep, D]
        for blk in self.encoder_blocks:
            x, _ = blk(x)                                                       # [B, n_keep, D]
        x = self.encoder_norm(x)                                                # [B, n_keep, D]

        # decoder: scatter back into mask_token padding
        x = self.decoder_embed(x)                                               # [B, n_keep, Dd]
        pad = self.mask_token.to(x.dtype).expand(B, buf + L, -1)                # [B, buf+L, Dd]
        x = torch.scatter(pad, 1, keep[..., None].expand(-1, -1, x.shape[-1]), x)  # [B, buf+L, Dd]
        x = x + self.decoder_pos_embed_learned                                  # [B, buf+L, Dd]
        entropy, last = None, len(self.decoder_blocks) - 1
        subset = query is not None and self.entropy_block != last
        for i, blk in enumerate(self.decoder_blocks):
            rows = buf + query if subset and i == last else None                # [B, n] queries of the last block
            x, attn = blk(x, return_attn=i == self.entropy_block, query_index=rows)  # [B, buf+L | n, Dd]
            if attn is not None:
                entropy = attention_entropy(attn[:, :, buf:])                   # [B, L] content rows
        x = x if subset else x[:, buf:]                                         # [B, n | L, Dd]
        pos = self.diffusion_pos_embed_learned.expand(B, -1, -1)                # [B, L, Dd]
        if query is not None:
            rows = query[..., None].expand(-1, -1, pos.shape[-1])               # [B, n, Dd]
            pos = torch.gather(pos, 1, rows)                                    # [B, n, Dd]
            x = x if subset else torch.gather(x, 1, rows)                       # [B, n, Dd]
        return self.decoder_norm(x) + pos, entropy                              # [B, n | L, Dd], [B, L]

    # ---- training --------------------------------------------------------------------------------

    def sample_orders(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """A random permutation of 0..L-1 per sample. [B, L] long"""
        return torch.argsort(_rand((batch, self.seq_len), generator, self.device), dim=1)

    def sample_num_masked(self, generator: torch.Generator | None = None) -> int:
        """ceil(L * r), r ~ N(1, 0.25) truncated to [mask_ratio_min, 1] (inverse-CDF draw), one per batch."""
        lo = torch.special.ndtr(torch.tensor((self.mask_ratio_min - 1.0) / MASK_RATIO_STD, dtype=torch.float64))
        u = _rand((1,), generator, torch.device("cpu")).double()
        ratio = 1.0 + MASK_RATIO_STD * torch.special.ndtri(lo + u * (0.5 - lo))  # ndtr(0) = 0.5
        ratio = float(ratio.clamp(self.mask_ratio_min, 1.0))
        return min(self.seq_len, math.ceil(self.seq_len * ratio))

    def forward_train(self, tokens: Tensor, cond: Tensor, generator: torch.Generator | None = None) -> TrainOutput:
        """tokens [B, L, c], labels [B] -> z [B, L, Dd], loss_mask [B, L] (1 = masked), entropy [B, L]."""
        B = tokens.shape[0]
        labels = torch.as_tensor(cond, dtype=torch.long, device=self.device)
        orders = self.sample_orders(B, generator)                               # [B, L]
        n = self.sample_num_masked(generator)
        mask = torch.zeros(B, self.seq_len, dtype=torch.bool, device=self.device)
        mask.scatter_(1, orders[:, :n], True)                                   # [B, L]
        class_embedding = self.class_emb(labels)                                # [B, D]
        if self.training and self.label_drop_prob > 0:                         # CFG: learn the null condition
            drop = _rand((B,), generator, self.device) < self.label_drop_prob
            class_embedding = torch.where(drop[:, None], self.fake_latent.to(class_embedding.dtype), class_embedding)
        z, entropy = self.forward_mae(tokens, mask, class_embedding)            # [B, L, Dd], [B, L]
        return TrainOutput(z=z, loss_mask=mask.to(z.dtype), entropy=entropy)

    # ---- generation ------------------------------------------------------------------------------

    def new_state(self, cond: Tensor, num_iter: int, cfg: bool = False,
                  generator: torch.Generator | None = None) -> MARState:
        """A fresh state for labels [B]: nothing known, a random order per sample (from ``generator``)."""
        labels = torch.as_tensor(cond, dtype=torch.long, device=self.device).reshape(-1)
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.class_emb.num_embeddings):
            raise ValueError(f"class labels must be in [0, {self.class_emb.num_embeddings - 1}], "
                             f"got {labels.tolist()[:8]}")
        cosine_mask_lengths(self.seq_len, num_iter)                             # validates num_iter
        B, (L, c) = len(labels), self.token_shape
        return MARState(labels=labels, tokens=torch.zeros(B, L, c, device=self.device, dtype=self.fake_latent.dtype),
                        mask=torch.ones(B, L, dtype=torch.bool, device=self.device),
                        orders=self.sample_orders(B, generator), num_iter=num_iter, cfg=cfg)

    def plan(self, state: MARState) -> list[Step]:
        """MAR's cosine schedule over each sample's order: step k generates orders[:, n_{k+1}:n_k].

        progress = (L - n_{k+1}) / L, the fraction known after the step (1.0 after the last one; MAR's
        code clamps the last n to 1 before its CFG ramp, giving (L - 1) / L there).
        """
        if not bool(state.mask.all()):
            raise ValueError("plan() expects a fresh state (nothing committed yet)")
        steps, masked = [], self.seq_len
        for nxt in cosine_mask_lengths(self.seq_len, state.num_iter):
            steps.append(Step(positions=state.orders[:, nxt:masked], progress=(self.seq_len - nxt) / self.seq_len))
            masked = nxt
        return steps

    def step(self, state: MARState, positions: Tensor) -> StepOutput:
        """One encoder + decoder forward on what the state knows -> z [B', n, Dd], E [B', n] at positions [B, n].

        With CFG, B' = 2B: rows [cond; uncond], the second half conditioned on ``fake_latent``.
        """
        tokens, mask, labels = state.tokens, state.mask, state.labels
        if state.cfg:
            null = torch.full_like(labels, self.class_emb.num_embeddings)       # the null condition's label
            tokens, mask = torch.cat([tokens, tokens]), torch.cat([mask, mask])  # [2B, L, c], [2B, L]
            labels, positions = torch.cat([labels, null]), torch.cat([positions, positions])  # [2B], [2B, n]
        z, entropy, entropy_global = self.step_net(tokens, self.kept_indices(mask), labels, positions)
        return StepOutput(z=z, entropy=entropy, entropy_global=entropy_global)  # [B', n, Dd], [B', n], [B']

    def step_net(self, tokens: Tensor, keep: Tensor, labels: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The one call generation makes into the network (the exported ``target_step`` graph): tokens
        [R, L, c] (zeros where unknown), keep [R, kept] (``kept_indices``), labels [R] (``class_num`` = the
        null condition, ``fake_latent``), positions [R, n] -> z [R, n, Dd], E [R, n], image mean of E [R]."""
        table = torch.cat([self.class_emb.weight, self.fake_latent])            # [classes + 1, D], last = null
        z, entropy = self.forward_kept(tokens, keep, table[labels], query=positions)  # [R, n, Dd], [R, L]
        return z, torch.gather(entropy, 1, positions), entropy.mean(1)

    def commit(self, state: MARState, positions: Tensor, tokens: Tensor) -> None:
        """Write tokens [B, n, c] at positions [B, n]; they become visible to later steps."""
        state.tokens.scatter_(1, positions[..., None].expand(-1, -1, tokens.shape[-1]), tokens.to(state.tokens.dtype))
        state.mask.scatter_(1, positions, False)

    def tokens(self, state: MARState) -> Tensor:
        """The committed tokens [B, L, c] (zeros where still unknown)."""
        return state.tokens
