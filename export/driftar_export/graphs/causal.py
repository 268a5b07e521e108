"""NextStep-1's exported graphs: a causal LLM with its KV cache as explicit inputs and outputs.

The host owns the cache (as TensorRT-LLM's and every production speculative decoder's runtime do:
docs/ECOSYSTEM.md section 3) and calls, per model (target and draft alike):

    {m}_prefill   ids [R, T], key_valid [R, T]                    -> k_cache, v_cache [nL, R, Hkv, T, d]
                  the prompt up to, not including, <boi> (NextStep1.new_state)
    {m}_step /    x [R, m, c], elements [m], k_cache, v_cache [nL, R, Hkv, T, d], key_valid [R, T]
    target_verify   -> z [R, m, H], entropy [R, m], k_cache_out, v_cache_out [nL, R, Hkv, T + m, d]
                  feed m elements (element 0 = <boi>, element i = x_i) in ONE forward (NextStep1._feed)

``elements`` are the positions in: element e sits at sequence index T + j (RoPE), its z predicts
image position e (gen_pos_embed), the image region starts at sequence index T - elements[0] (the
entropy's keys, Eq. 4). Element 0 is <boi>: its embedding is a constant of the graph and its x row
is ignored, so one graph serves the first step and every later one. ``target_step`` feeds one
element (plain decoding), ``target_verify`` k + 1 (the pending token and k drafts), ``draft_step``
one or two (a fully accepted round leaves the last draft and the bonus token pending). When the
model has a draft, ``target_step`` is ``target_verify``'s graph with ``elements`` pinned to 1 (the
manifest records it as an alias: one file, its own TensorRT profile).

``run_layers`` is ``NextStep1.forward_layers`` with the image start as a tensor: the entropy's key
subset becomes a column mask (the same sums; masked columns add exact zeros), so the start is not
baked into the graph as the example's prompt length.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from driftar_core.method.entropy import PROB_FLOOR, attention_entropy
from driftar_export.graphs.spec import IO, DimRange, GraphSpec, randn


def run_layers(lm: nn.Module, embeds: Tensor, key_valid: Tensor, past_k: Tensor | None = None,
               past_v: Tensor | None = None, image_start: Tensor | None = None
               ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """embeds [R, Q, H] after T cached keys, key_valid [R, T + Q], past [nL, R, Hkv, T, d] or None
    -> (norm(h) [R, Q, H], E [R, Q] (when image_start is given), k, v [nL, R, Hkv, T + Q, d])."""
    Q = embeds.shape[1]
    T = 0 if past_k is None else past_k.shape[3]
    q_pos = torch.arange(Q, device=embeds.device) + T                         # [Q] sequence indices
    k_pos = torch.arange(T + Q, device=embeds.device)                         # [K]
    mask = (k_pos[None] <= q_pos[:, None])[None] & key_valid[:, None, :]      # [R, Q, K] causal + padding
    mask = mask | (k_pos[None] == q_pos[:, None])[None]                       # a pad query sees itself
    cos, sin = lm.rotary_emb(q_pos, embeds.dtype)                             # [Q, d]
    h, entropy, ks, vs = embeds, None, [], []
    for i, layer in enumerate(lm.layers):
        want = image_start is not None and i == lm.entropy_layer
        past = None if past_k is None else (past_k[i], past_v[i])
        h, attn, (k, v) = layer(h, cos, sin, mask[:, None], past, need_weights=want)  # [R, Q, H]
        ks.append(k), vs.append(v)
        if attn is not None:                                                  # Eq. 4 over keys from <boi> on
            image = (k_pos >= image_start)[None, None]                        # [1, 1, K]
            a = attn.float().mean(1) * image                                  # [R, Q, K] head-averaged
            a = a / a.sum(-1, keepdim=True).clamp_min(PROB_FLOOR)             # renormalised (key_subset)
            entropy = attention_entropy(a[:, None], mask & image)             # [R, Q]
    return lm.norm(h), entropy, torch.stack(ks), torch.stack(vs)


class PrefillGraph(nn.Module):
    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, ids: Tensor, key_valid: Tensor) -> tuple[Tensor, Tensor]:
        """ids [R, T], key_valid [R, T] -> k_cache, v_cache [nL, R, Hkv, T, d]."""
        _, _, k, v = run_layers(self.lm, self.lm.embed_tokens(ids), key_valid)
        return k, v


class FeedGraph(nn.Module):
    def __init__(self, lm: nn.Module, boi_id: int):
        super().__init__()
        self.lm = lm
        self.register_buffer("boi", lm.embed_tokens.weight[boi_id].detach().clone())  # [H] element 0

    def forward(self, x: Tensor, elements: Tensor, k_cache: Tensor, v_cache: Tensor, key_valid: Tensor
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        lm = self.lm
        R, m, _ = x.shape
        is_boi = (elements == 0)[None, :, None]                               # [1, m, 1]
        embeds = torch.where(is_boi, self.boi.to(x.dtype), lm.image_in_projector(x))  # [R, m, H]
        key_valid = torch.cat([key_valid, key_valid.new_ones(R, m)], dim=1)   # [R, T + m]
        image_start = k_cache.shape[3] - elements[0]                          # sequence index of <boi>
        h, entropy, k, v = run_layers(lm, embeds, key_valid, k_cache, v_cache, image_start)
        return lm.image_condition(h, elements), entropy, k, v                 # [R, m, H], [R, m], caches


def cache_layout(lm: nn.Module) -> dict[str, int]:
    cfg = lm.config
    return {"num_layers": len(lm.layers), "kv_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim,
            "hidden": cfg.hidden_size, "entropy_layer": lm.entropy_layer}


def prompt_table(lm: nn.Module) -> dict[str, Any]:
    """The prefixes the host needs for class labels (NextStep1.prompts + WordTokenizer.batch_prefix)."""
    from driftar_nextstep1.text import NEGATIVE_PROMPT
    grid = lm.config.grid
    return {"class_prefix_ids": [lm.text.prefix(p, grid) for p in lm.prompts(list(range(lm.config.class_num)))],
            "negative_prefix_ids": lm.text.prefix(NEGATIVE_PROMPT, grid), "pad_id": lm.text.pad_id,
            "boi_id": lm.text.boi_id, "use_norm": bool(lm.config.use_norm)}


def causal_specs(lm: nn.Module, prefix: str, *, max_rows: int, max_prompt_len: int,
                 feeds: dict[str, tuple[int, int]]) -> list[GraphSpec]:
    """``{prefix}_prefill`` plus one feed graph per ``feeds`` entry: role -> (min, max) elements per call."""
    L, c = lm.token_shape
    lay = cache_layout(lm)
    nL, Hkv, d = lay["num_layers"], lay["kv_heads"], lay["head_dim"]
    vocab = lm.embed_tokens.num_embeddings
    rows = DimRange.spread(1, max_rows)

    def padded_valid(R: int, T: int, pad: int) -> Tensor:
        valid = torch.ones(R, T, dtype=torch.bool)
        valid[0, :pad] = False                                                # left padding in row 0
        return valid

    def make_prefill(dd: dict[str, int], g: torch.Generator) -> tuple[Tensor, ...]:
        R, T = dd["rows"], dd["prefix"]
        return torch.randint(0, vocab, (R, T), generator=g), padded_valid(R, T, min(2, T - 1))

    specs = [GraphSpec(
        role=f"{prefix}_prefill", module=PrefillGraph(lm).eval(),
        inputs=[IO("ids", "int64", ("rows", "prefix")), IO("key_valid", "bool", ("rows", "prefix"))],
        outputs=["k_cache", "v_cache"],
        dims={"rows": rows, "prefix": DimRange.spread(1, max_prompt_len - 1)}, make_inputs=make_prefill,
        description=f"{prefix}: prompt prefix up to <boi> -> KV cache")]

    max_past = max_prompt_len - 1 + L - 1
    for role, (m_lo, m_hi) in feeds.items():
        m_dim: int | str = m_lo if m_lo == m_hi else "elements"

        def make_feed(dd: dict[str, int], g: torch.Generator, m_fixed: int = m_lo) -> tuple[Tensor, ...]:
            R, T = dd["rows"], dd["past"]
            m = dd.get("elements", m_fixed)
            first = max(0, min(L - m, T - 1, T // 3))                         # image start T - first >= 1
            kc = randn((nL, R, Hkv, T, d), g)
            return (randn((R, m, c), g, 0.7), torch.arange(first, first + m), kc, randn(kc.shape, g),
                    padded_valid(R, T, min(2, T - first - 1)))

        dims = {"rows": rows, "past": DimRange.spread(1, max_past)}
        if m_dim == "elements":
            dims["elements"] = DimRange.spread(m_lo, m_hi)
        specs.append(GraphSpec(
            role=role, module=FeedGraph(lm, lm.text.boi_id).eval(),
            inputs=[IO("x", "float32", ("rows", m_dim, c)), IO("elements", "int64", (m_dim,)),
                    IO("k_cache", "float32", (nL, "rows", Hkv, "past", d)),
                    IO("v_cache", "float32", (nL, "rows", Hkv, "past", d)), IO("key_valid", "bool", ("rows", "past"))],
            outputs=["z", "entropy", "k_cache_out", "v_cache_out"], dims=dims, make_inputs=make_feed,
            description=f"{prefix}: feed {m_lo}..{m_hi} elements with the KV cache -> z, E, the grown cache"))
    return specs
