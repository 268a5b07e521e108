"""NextStep-1's exported graphs (``BackboneSpec.graphs``): the LLM with its KV cache as explicit inputs and
outputs, which is how ``NextStep1`` itself generates (``prefill_net``, ``feed_net``; the state owns the
cache, as TensorRT-LLM's and every production speculative decoder's runtime do).

    {m}_prefill   = {m}.prefill_net   ids [R, T], key_valid [R, T]  -> k_cache, v_cache [nL, R, Hkv, T, d]
    {m}_step /    = {m}.feed_net      x [R, m, c], elements [m], k_cache, v_cache [nL, R, Hkv, T, d],
    target_verify                     key_valid [R, T] -> z [R, m, H], entropy [R, m], k_cache_out,
                                      v_cache_out [nL, R, Hkv, T + m, d]

for the target (``backbone``) and a layer draft (``draft``). ``target_step`` feeds one element (plain
decoding), ``target_verify`` k + 1 (the pending token and k drafts), ``draft_step`` one or two (a
fully accepted round leaves the last draft and the bonus token pending). With a draft,
``target_step`` is ``target_verify``'s graph with ``elements`` pinned to 1 (an alias: one file, its
own TensorRT profile).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from driftar_core.graphs import IO, DimRange, ExportBounds, GraphSpec, randn
from driftar_core.interfaces import FeatureDraft


def longest_prompt(lm: Any) -> int:
    """Elements of the longest prompt prefix the class labels (and the CFG prompt) make."""
    from driftar_nextstep1.text import NEGATIVE_PROMPT
    prompts = [*lm.prompts(list(range(lm.config.class_num))), NEGATIVE_PROMPT]
    return max(len(lm.text.prefix(p, lm.config.grid)) for p in prompts)


def nextstep1_graphs(bundle: Any, bounds: ExportBounds) -> list[GraphSpec]:
    lm, draft = bundle.backbone, bundle.draft
    longest = longest_prompt(lm)
    max_prompt = bounds.max_prompt_len or longest
    if max_prompt < longest:
        raise ValueError(f"max_prompt_len {max_prompt} is shorter than the longest class prompt prefix ({longest})")
    if draft is None:
        return causal_specs(bundle, "backbone", "target", max_rows=bounds.max_rows, max_prompt_len=max_prompt,
                            feeds={"target_step": (1, 1)})
    k = bounds.max_draft_len or 4
    specs = causal_specs(bundle, "backbone", "target", max_rows=bounds.max_rows, max_prompt_len=max_prompt,
                         feeds={"target_verify": (1, k + 1)})
    verify = specs[-1]
    specs.append(GraphSpec(role="target_step", binds=verify.binds, bundle=bundle, inputs=verify.inputs,
                           outputs=verify.outputs, dims=verify.dims, make_inputs=verify.make_inputs,
                           alias_of="target_verify", pinned={"elements": 1}))
    if not isinstance(draft, FeatureDraft):                        # a layer draft: its own cache and graphs
        specs += causal_specs(bundle, "draft", "draft", max_rows=bounds.max_rows, max_prompt_len=max_prompt,
                              feeds={"draft_step": (1, 2)})
    return specs


def causal_specs(bundle: Any, owner: str, prefix: str, *, max_rows: int, max_prompt_len: int,
                 feeds: dict[str, tuple[int, int]]) -> list[GraphSpec]:
    """``{prefix}_prefill`` plus one feed graph per ``feeds`` entry: role -> (min, max) elements per call."""
    lm = getattr(bundle, owner)
    L, c = lm.token_shape
    cfg = lm.config
    nL, Hkv, d = len(lm.layers), cfg.num_key_value_heads, cfg.head_dim
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
        role=f"{prefix}_prefill", binds=f"{owner}.prefill_net", bundle=bundle,
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
            role=role, binds=f"{owner}.feed_net", bundle=bundle,
            inputs=[IO("x", "float32", ("rows", m_dim, c)), IO("elements", "int64", (m_dim,)),
                    IO("k_cache", "float32", (nL, "rows", Hkv, "past", d)),
                    IO("v_cache", "float32", (nL, "rows", Hkv, "past", d)), IO("key_valid", "bool", ("rows", "past"))],
            outputs=["z", "entropy", "k_cache_out", "v_cache_out"], dims=dims, make_inputs=make_feed,
            head_rows=max_rows * m_hi,                                        # every fed element's z is decoded
            description=f"{prefix}: feed {m_lo}..{m_hi} elements with the KV cache -> z, E, the grown cache"))
    return specs
