"""The NextStep-1 backbone: a causal decoder-only LLM over [text prompt; image prefix; image tokens].

Follows NextStep-1 (StepFun 2025, arXiv 2508.10711) and stepfun-ai/NextStep-1
(modeling_nextstep.py, pipeline_nextstep.py; docs/backbones.md "NextStep-1"). Module names equal the
official ones (``embed_tokens``, ``layers.{i}.*``, ``norm``, ``lm_head``, ``image_in_projector``,
``image_out_projector``, ``gen_pos_embed``), so the official keys map 1:1 under ``backbone.``.

The sequence and what each hidden state predicts (strictly causal, one running RoPE position):

    index:   0 ...        P-2  P-1    P     P+1  ...  P+L-2  P+L-1
    input:   <bos> prompt ...  <boi>  x_1   x_2  ...  x_{L-1} x_L
    output:  next text tokens   z_1    z_2   z_3  ...  z_L    <eoi> (lm_head)

z_j = image_out_projector(norm(h)) at the input just before x_j is the head's condition (the
official pipeline applies image_out_projector at inference; its public training forward does not:
docs/backbones.md "NextStep-1". driftar applies it in both). Captions are LEFT-padded (pad keys masked, pads keep
their position index, as the official cache_position does); the CFG branch is the empty prompt.

Generation state ("elements" are the inputs from <boi> on: element 0 = <boi>, element i = x_i):
``new_state`` prefills the prompt up to, not including, <boi>. ``step`` feeds every committed
element whose keys are not cached yet (one, in plain decoding) in ONE forward and returns z and E
for the next position. ``verify`` appends k drafted tokens and feeds them with the pending element
in ONE forward, returning z and E for all k + 1 next positions; ``rollback(n)`` drops the last n
tokens and every cached key past the new prefix. After each plain step + commit, and after every
speculative round, the cache holds exactly ``n`` elements for ``n`` committed tokens.

E (Drift-AR Eq. 4) is the causal-normalised entropy of the penultimate layer's head-averaged
attention rows over the image region (keys from <boi> on, renormalised, as the official code drops
its class-buffer columns), so E(z_1) = 0 (one visible key) and r = j keys for z_j. It comes out of
the same forward, through driftar_core.method.entropy.attention_entropy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from driftar_core.interfaces import Step, StepOutput, TrainOutput
from driftar_core.method.entropy import attention_entropy
from driftar_nextstep1.config import NextStep1Config
from driftar_nextstep1.layers import DecoderLayer, RMSNorm, RotaryEmbedding
from driftar_nextstep1.text import NEGATIVE_PROMPT, WordTokenizer, class_prompt

TOKEN_NORM_EPS = 1e-6   # pipeline_nextstep.layer_norm
IGNORE = -100           # cross-entropy targets that do not count


def token_layer_norm(tokens: Tensor) -> Tensor:
    """NextStep's ``use_norm``: non-affine LayerNorm over each token's c channels. [..., c]"""
    return F.layer_norm(tokens.float(), tokens.shape[-1:], eps=TOKEN_NORM_EPS).to(tokens.dtype)


def sincos_2d(dim: int, grid: int) -> Tensor:
    """MAE's 2-D sin-cos table [grid * grid, dim] (the official ``get_2d_sincos_pos_embed``)."""
    def one_d(d: int, pos: Tensor) -> Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = pos.reshape(-1)[:, None] * omega[None]                            # [M, d/2]
        return torch.cat([out.sin(), out.cos()], dim=1)                         # [M, d]
    coords = torch.arange(grid, dtype=torch.float64)
    gw, gh = torch.meshgrid(coords, coords, indexing="xy")                      # numpy meshgrid order
    return torch.cat([one_d(dim // 2, gw), one_d(dim // 2, gh)], dim=1).float()  # [grid^2, dim]


@dataclass
class NextStep1State:
    """One batch's generation state. Rows R = B, or 2B with CFG ([cond; uncond]).

    The KV cache is two stacked tensors, the layout ``prefill_net`` and ``feed_net`` take and return
    (and their exported graphs: the export runtime runs this same state)."""

    k: Tensor                   # [nL, R, Hkv, T, d] keys of every fed input
    v: Tensor                   # [nL, R, Hkv, T, d] values
    key_valid: Tensor           # [R, T] bool: False at left padding
    prefix_len: int             # P (<boi> is sequence index P - 1)
    tokens: Tensor              # [B, L, c] committed tokens (after use_norm), zeros past n
    n: int = 0                  # committed tokens
    cfg: bool = False

    @property
    def cached(self) -> int:
        """T: sequence indices whose keys are cached."""
        return self.k.shape[3]

    @property
    def cache_len(self) -> int:
        """Cached elements (inputs from <boi> on); equals ``n`` between rounds."""
        return self.cached - (self.prefix_len - 1)


class NextStep1(nn.Module):
    """NextStep-1's LLM; satisfies driftar_core.interfaces.SpeculativeBackbone."""

    def __init__(self, config: NextStep1Config):
        super().__init__()
        cfg = self.config = config
        self.text = WordTokenizer()
        vocab = cfg.vocab_size if cfg.vocab_size is not None else len(self.text)
        if vocab < len(self.text):
            raise ValueError(f"vocab_size {vocab} is smaller than the word tokenizer ({len(self.text)} tokens)")
        H, c = cfg.hidden_size, cfg.token_dim
        self.token_shape, self.z_dim = (cfg.seq_len, c), H
        self.embed_tokens = nn.Embedding(vocab, H)
        self.layers = nn.ModuleList([
            DecoderLayer(H, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size,
                         cfg.rms_norm_eps, cfg.attention_bias, cfg.o_attention_bias)
            for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(H, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)
        self.lm_head = nn.Linear(H, vocab, bias=False)
        grid = cfg.gen_pos_embed_grid or cfg.grid
        self.register_buffer("gen_pos_embed", sincos_2d(H, grid)[None])        # [1, grid^2, H] (official: 32^2)
        self.image_in_projector = nn.Linear(c, H)
        self.image_out_projector = nn.Linear(H, H)
        self.entropy_layer = max(cfg.num_hidden_layers - 2, 0)                  # penultimate layer
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """HF PreTrainedModel init: N(0, initializer_range) Linear/Embedding weights, zero biases."""
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    # ---- the transformer -------------------------------------------------------------------------

    def forward_layers(self, embeds: Tensor, key_valid: Tensor, past_k: Tensor | None = None,
                       past_v: Tensor | None = None, image_start: Tensor | None = None
                       ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """embeds [R, Q, H] after T cached keys, key_valid [R, T + Q] bool, past [nL, R, Hkv, T, d] or None,
        image_start: sequence index of <boi> (a 0-dim tensor; None: no E)
        -> (norm(h) [R, Q, H], E [R, Q] or None, k, v [nL, R, Hkv, T + Q, d]).

        Positions are tensors, never Python ints taken from the data, so this one forward serves
        training, prefill, decoding and the exported graphs. E (Eq. 4) is over keys from <boi> on: the
        image columns of the head-averaged attention, renormalised (masked columns add exact zeros).
        """
        Q = embeds.shape[1]
        T = 0 if past_k is None else past_k.shape[3]
        q_pos = torch.arange(Q, device=embeds.device) + T                         # [Q] sequence indices
        k_pos = torch.arange(T + Q, device=embeds.device)                         # [K]
        mask = (k_pos[None] <= q_pos[:, None])[None] & key_valid[:, None, :]      # [R, Q, K] causal + padding
        mask = mask | (k_pos[None] == q_pos[:, None])[None]                       # a pad query sees itself
        if torch.compiler.is_exporting():                                         # traced: from the positions
            cos, sin = self.rotary_emb(q_pos, embeds.dtype)                       # [Q, d]
        else:                                                                     # eager: a slice of a cached table
            cos, sin = self.rotary_emb.span(T, Q, embeds.dtype)                   # (same values, fewer ops)
        h, entropy, ks, vs = embeds, None, [], []
        for i, layer in enumerate(self.layers):
            want = image_start is not None and i == self.entropy_layer
            past = None if past_k is None else (past_k[i], past_v[i])
            h, attn, (k, v) = layer(h, cos, sin, mask[:, None], past, need_weights=want)  # [R, Q, H]
            ks.append(k)
            vs.append(v)
            if attn is not None:
                image = (k_pos >= image_start)[None, None]                        # [1, 1, K] keys from <boi> on
                entropy = attention_entropy(attn, mask, keys=image)               # [R, Q], renormalised there
        return self.norm(h), entropy, torch.stack(ks), torch.stack(vs)

    # ---- the graphs: the only calls generation makes into the network ----------------------------

    def prefill_net(self, ids: Tensor, key_valid: Tensor) -> tuple[Tensor, Tensor]:
        """ids [R, T] (the prompt up to, not including, <boi>), key_valid [R, T] -> k, v [nL, R, Hkv, T, d]."""
        _, _, k, v = self.forward_layers(self.embed_tokens(ids), key_valid)
        return k, v

    def feed_net(self, x: Tensor, elements: Tensor, k_cache: Tensor, v_cache: Tensor, key_valid: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Feed m elements after T cached keys in ONE forward: x [R, m, c] (element e's input token; the row
        of element 0, <boi>, is ignored), elements [m] (e = first .. first + m - 1), k/v_cache
        [nL, R, Hkv, T, d], key_valid [R, T] -> z [R, m, H] (z of element e predicts image position e),
        E [R, m], k, v [nL, R, Hkv, T + m, d]."""
        R, m, _ = x.shape
        boi = self.embed_tokens.weight[self.text.boi_id]                          # [H] element 0's input
        embeds = torch.where((elements == 0)[None, :, None], boi.to(x.dtype), self.image_in_projector(x))
        key_valid = torch.cat([key_valid, key_valid.new_ones(R, m)], dim=1)       # [R, T + m]
        image_start = k_cache.shape[3] - elements[0]                              # sequence index of <boi>
        h, entropy, k, v = self.forward_layers(embeds, key_valid, k_cache, v_cache, image_start)
        return self.image_condition(h, elements), entropy, k, v                   # [R, m, H], [R, m], caches

    def image_condition(self, h: Tensor, positions: Tensor | None) -> Tensor:
        """norm(h) [B', n, H] predicting image positions [n] (0-based; needed with use_gen_pos_embed) -> z [B', n, H]."""
        if self.config.use_gen_pos_embed:
            h = h + self.gen_pos_embed[:, positions].to(h.dtype)
        return self.image_out_projector(h)

    def feedback(self, tokens: Tensor) -> Tensor:
        """A sampled token as it is stored and fed back: use_norm's LayerNorm, or unchanged. [..., c]"""
        return token_layer_norm(tokens) if self.config.use_norm else tokens

    # ---- conditions ------------------------------------------------------------------------------

    def prompts(self, cond: Any) -> list[str]:
        """Prompts (a list of str) pass through; class labels [B] become "a handwritten digit <name>"."""
        if isinstance(cond, (list, tuple)) and all(isinstance(p, str) for p in cond):
            return list(cond)
        labels = torch.as_tensor(cond).reshape(-1).tolist()
        bad = [l for l in labels if not 0 <= l < self.config.class_num]
        if bad:
            raise ValueError(f"class labels must be in [0, {self.config.class_num - 1}], got {bad[:8]}")
        return [class_prompt(int(l)) for l in labels]

    def prefix_ids(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """-> ids [B, P] long, valid [B, P] bool (left-padded, ending in <boi>)."""
        ids, valid = self.text.batch_prefix(prompts, self.config.grid)
        return (torch.tensor(ids, dtype=torch.long, device=self.device),
                torch.tensor(valid, dtype=torch.bool, device=self.device))

    # ---- training --------------------------------------------------------------------------------

    def forward_train(self, tokens: Tensor, cond: Any, generator: torch.Generator | None = None) -> TrainOutput:
        """Teacher forcing: tokens [B, L, c], labels [B] or prompts -> z [B, L, H], E [B, L],
        aux_loss = lm_loss_weight * text CE (prompt tokens after <bos>, and <eoi> after x_L).

        In training mode a prompt is replaced by the empty prompt with probability prompt_drop_prob (CFG),
        and the image tokens FED as inputs get N(0, input_noise_std^2) noise (the head's targets stay
        clean; ``TrainOutput.inputs`` is what was fed, so a draft trained alongside sees the same).
        """
        B, L, _ = tokens.shape
        prompts = self.prompts(cond)
        if self.training and self.config.prompt_drop_prob > 0:
            u = torch.rand(B, generator=generator, device=generator.device if generator else "cpu")
            prompts = [NEGATIVE_PROMPT if d else p for p, d in zip(prompts, (u < self.config.prompt_drop_prob).tolist())]
        inputs = tokens
        if self.training and self.config.input_noise_std > 0:
            noise = torch.randn(tokens.shape, generator=generator, device=generator.device if generator else "cpu")
            inputs = tokens + self.config.input_noise_std * noise.to(tokens)    # [B, L, c]
        ids, valid = self.prefix_ids(prompts)                                   # [B, P]
        P = ids.shape[1]
        embeds = torch.cat([self.embed_tokens(ids), self.image_in_projector(inputs.to(self.embed_tokens.weight.dtype))], 1)
        key_valid = torch.cat([valid, valid.new_ones(B, L)], dim=1)             # [B, P + L]
        image_start = torch.tensor(P - 1, device=embeds.device)
        h, entropy, _, _ = self.forward_layers(embeds, key_valid, image_start=image_start)  # [B, P + L, H]
        z = self.image_condition(h[:, P - 1:P - 1 + L], torch.arange(L, device=h.device))  # [B, L, H]

        # text CE: h[t] predicts ids[t + 1] where both are real tokens; h[P + L - 1] (x_L) predicts <eoi>
        targets = ids[:, 1:].masked_fill(~(valid[:, 1:] & valid[:, :-1]), IGNORE)  # [B, P - 1]
        eoi = torch.full((B, 1), self.text.eoi_id, dtype=torch.long, device=ids.device)
        logits = self.lm_head(torch.cat([h[:, :P - 1], h[:, -1:]], dim=1)).float()  # [B, P, V]
        ce = F.cross_entropy(logits.flatten(0, 1), torch.cat([targets, eoi], 1).flatten(), ignore_index=IGNORE)
        return TrainOutput(z=z, loss_mask=z.new_ones(B, L), entropy=entropy[:, P - 1:P - 1 + L],
                           aux_loss=self.config.lm_loss_weight * ce, cond=prompts, inputs=inputs)

    # ---- generation ------------------------------------------------------------------------------

    @torch.no_grad()
    def new_state(self, cond: Any, num_iter: int | None = None, cfg: bool = False,
                  generator: torch.Generator | None = None) -> NextStep1State:
        """Build the prompt prefix (plus the empty prompt with CFG) and prefill the KV cache up to <boi>."""
        L, c = self.token_shape
        if num_iter is not None and num_iter != L:
            raise ValueError(f"NextStep-1 generates one token per AR step: num_iter must be {L}, got {num_iter}")
        prompts = self.prompts(cond)
        B = len(prompts)
        ids, valid = self.prefix_ids(prompts + [NEGATIVE_PROMPT] * B if cfg else prompts)  # [B', P]
        P = ids.shape[1]
        k, v = self.prefill_net(ids[:, :P - 1], valid[:, :P - 1])               # [nL, R, Hkv, P - 1, d]
        dtype = self.embed_tokens.weight.dtype
        return NextStep1State(k=k, v=v, key_valid=valid[:, :P - 1], prefix_len=P,
                              tokens=torch.zeros(B, L, c, device=self.device, dtype=dtype), cfg=cfg)

    def plan(self, state: NextStep1State) -> list[Step]:
        """One token per step in raster order: positions [B, 1] = j, progress (j + 1) / L."""
        if state.n:
            raise ValueError("plan() expects a fresh state (nothing committed yet)")
        B, L = state.tokens.shape[0], self.token_shape[0]
        return [Step(positions=torch.full((B, 1), j, dtype=torch.long, device=self.device), progress=(j + 1) / L)
                for j in range(L)]

    def _feed(self, state: NextStep1State) -> tuple[Tensor, Tensor]:
        """ONE forward over every committed element not cached yet -> z, E for the positions they predict."""
        first, last = state.cache_len, state.n                                  # elements first..last
        if first > last:
            raise ValueError(f"nothing to feed: {first} elements cached for {last} committed tokens")
        x = state.tokens[:, max(first - 1, 0):last]                             # x_i is element i
        if first == 0:                                                          # element 0 = <boi> (row ignored)
            x = torch.cat([torch.zeros_like(state.tokens[:, :1]), x], dim=1)
        if state.cfg:
            x = torch.cat([x, x])                                               # [R, m, c]
        elements = torch.arange(first, last + 1, device=x.device)               # [m]
        z, entropy, state.k, state.v = self.feed_net(x, elements, state.k, state.v, state.key_valid)
        state.key_valid = torch.cat([state.key_valid, state.key_valid.new_ones(x.shape[0], x.shape[1])], dim=1)
        return z, entropy                                                       # [R, m, H], [R, m]

    @torch.no_grad()
    def step(self, state: NextStep1State, positions: Tensor) -> StepOutput:
        """One cached forward: z [B', 1, H], E [B', 1] for the next raster position (positions [B, 1] = n)."""
        if positions.shape[1] != 1 or not bool((positions == state.n).all()):
            raise ValueError(f"NextStep-1 decodes in raster order: expected positions [B, 1] = {state.n}, "
                             f"got {positions.flatten()[:4].tolist()}")
        if state.n >= self.token_shape[0]:
            raise ValueError("all image tokens are already generated")
        z, entropy = self._feed(state)
        return StepOutput(z=z[:, -1:], entropy=entropy[:, -1:])

    def commit(self, state: NextStep1State, positions: Tensor, tokens: Tensor) -> None:
        """Append tokens [B, m, c] at positions [B, m] = n .. n + m - 1 (after use_norm)."""
        m = tokens.shape[1]
        expected = state.n if m == 1 else torch.arange(state.n, state.n + m, device=positions.device)
        if not bool((positions == expected).all()) or state.n + m > self.token_shape[0]:
            raise ValueError(f"NextStep-1 commits in raster order: expected positions "
                             f"{list(range(state.n, state.n + m))}, got {positions[0].tolist()}")
        state.tokens[:, state.n:state.n + m] = self.feedback(tokens).to(state.tokens.dtype)
        state.n += m

    def tokens(self, state: NextStep1State) -> Tensor:
        """The committed tokens [B, L, c] (zeros past n)."""
        return state.tokens

    # ---- speculative decoding ----------------------------------------------------------------------

    @torch.no_grad()
    def verify(self, state: NextStep1State, tokens: Tensor) -> StepOutput:
        """Append k drafted tokens [B, k, c] and run ONE forward -> z [B', k + 1, H], E [B', k + 1]
        for positions n .. n + k (n = committed before the call); roll back the rejected ones after."""
        k = tokens.shape[1]
        n = state.n
        if n + k >= self.token_shape[0]:
            raise ValueError(f"cannot verify {k} drafts after {n} of {self.token_shape[0]} tokens: "
                             "positions n .. n + k must all exist")
        state.tokens[:, n:n + k] = self.feedback(tokens).to(state.tokens.dtype)
        state.n += k
        z, entropy = self._feed(state)
        return StepOutput(z=z[:, -(k + 1):], entropy=entropy[:, -(k + 1):])

    def rollback(self, state: NextStep1State, n: int) -> None:
        """Drop the last n committed tokens and every cached key past the new prefix (at most n + 1 elements)."""
        if not 0 <= n <= state.n:
            raise ValueError(f"cannot roll back {n} of {state.n} committed tokens")
        state.n -= n
        state.tokens[:, state.n:] = 0
        keep = state.prefix_len - 1 + min(state.cache_len, state.n + 1)
        state.k, state.v, state.key_valid = state.k[:, :, :, :keep], state.v[:, :, :, :keep], state.key_valid[:, :keep]
