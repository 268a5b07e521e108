"""A causal model's generation state on the host (NextStep1State's semantics, numpy arrays).

The KV cache lives here, not in the graphs: ``{name}_prefill`` fills it with the prompt prefix,
every feed call returns it grown by the fed elements, ``rollback`` slices it. The bookkeeping is
NextStep1's (plugins/nextstep1/driftar_nextstep1/nextstep.py), line for line:

- elements are the inputs from <boi> on (element 0 = <boi>, element i = the committed token x_i);
- ``feed`` sends every committed element whose keys are not cached yet, in ONE call;
- after a plain step + commit, and after every speculative round, the target caches exactly ``n``
  elements for ``n`` committed tokens; ``rollback(m)`` keeps at most ``n + 1`` of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from driftar_export.runtime.graphs import GraphSet
from driftar_export.runtime.host import token_layer_norm


@dataclass
class CausalState:
    k: np.ndarray               # [nL, R, Hkv, T, d] keys of every fed input (R = B, or 2B with CFG)
    v: np.ndarray
    key_valid: np.ndarray       # [R, T] bool, False at left padding
    prefix_len: int             # P (<boi> is sequence index P - 1)
    tokens: np.ndarray          # [B, L, c] committed tokens (after use_norm), zeros past n
    cfg: bool
    n: int = 0

    @property
    def cache_len(self) -> int:
        """Cached elements (inputs from <boi> on)."""
        return self.key_valid.shape[1] - (self.prefix_len - 1)


class CausalModel:
    """The target or the draft: prefill / feed / commit / rollback over its exported graphs.

    ``one`` is the graph that feeds a single element, ``many`` the one that feeds several
    (target: ``target_step`` / ``target_verify``; draft: ``draft_step`` for both).
    """

    def __init__(self, graphs: GraphSet, name: str, meta: dict[str, Any], prompts: dict[str, Any],
                 token_shape: tuple[int, int], one: str, many: str):
        self.graphs, self.name, self.meta, self.prompts = graphs, name, meta, prompts
        self.L, self.c = token_shape
        self.one, self.many = one, many

    def new_state(self, labels: np.ndarray, cfg: bool) -> CausalState:
        """Prefixes of the class prompts (plus the empty prompt with CFG), left-padded; prefill up to <boi>."""
        table = self.prompts["class_prefix_ids"]
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(table)):
            raise ValueError(f"class labels must be in [0, {len(table) - 1}], got {labels.tolist()[:8]}")
        rows = [table[int(y)] for y in labels] + ([self.prompts["negative_prefix_ids"]] * len(labels) if cfg else [])
        P = max(len(r) for r in rows)
        ids = np.array([[self.prompts["pad_id"]] * (P - len(r)) + r for r in rows], np.int64)   # [R, P]
        valid = np.array([[False] * (P - len(r)) + [True] * len(r) for r in rows], bool)       # [R, P]
        out = self.graphs.run(f"{self.name}_prefill", {"ids": ids[:, :P - 1], "key_valid": valid[:, :P - 1]})
        return CausalState(k=out["k_cache"], v=out["v_cache"], key_valid=valid[:, :P - 1], prefix_len=P,
                           tokens=np.zeros((len(labels), self.L, self.c), np.float32), cfg=cfg)

    def feed(self, state: CausalState) -> tuple[np.ndarray, np.ndarray]:
        """ONE call over every committed element not cached yet -> z [R, m, H], E [R, m]."""
        first, last = state.cache_len, state.n
        if first > last:
            raise ValueError(f"nothing to feed: {first} elements cached for {last} committed tokens")
        x = state.tokens[:, max(first - 1, 0):last]                            # x_i is element i
        if first == 0:                                                         # element 0 = <boi> (x row ignored)
            x = np.concatenate([np.zeros_like(state.tokens[:, :1]), x], axis=1)
        if state.cfg:
            x = np.concatenate([x, x])                                         # [R, m, c]
        m = x.shape[1]
        out = self.graphs.run(self.one if m == 1 else self.many, {
            "x": np.ascontiguousarray(x), "elements": np.arange(first, last + 1, dtype=np.int64),
            "k_cache": np.ascontiguousarray(state.k), "v_cache": np.ascontiguousarray(state.v),
            "key_valid": np.ascontiguousarray(state.key_valid)})
        state.k, state.v = out["k_cache_out"], out["v_cache_out"]
        state.key_valid = np.concatenate([state.key_valid, np.ones((x.shape[0], m), bool)], axis=1)
        return out["z"], out["entropy"]

    def step(self, state: CausalState) -> tuple[np.ndarray, np.ndarray]:
        """z [R, 1, H], E [R, 1] for the next raster position n."""
        if state.n >= self.L:
            raise ValueError("all image tokens are already generated")
        z, e = self.feed(state)
        return z[:, -1:], e[:, -1:]

    def verify(self, state: CausalState, drafted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append k drafts [B, k, c], ONE call -> z [R, k + 1, H], E [R, k + 1] for positions n .. n + k."""
        k, n = drafted.shape[1], state.n
        if n + k >= self.L:
            raise ValueError(f"cannot verify {k} drafts after {n} of {self.L} tokens")
        state.tokens[:, n:n + k] = self.feedback(drafted)
        state.n += k
        z, e = self.feed(state)
        return z[:, -(k + 1):], e[:, -(k + 1):]

    def feedback(self, tokens: np.ndarray) -> np.ndarray:
        return token_layer_norm(tokens) if self.prompts["use_norm"] else tokens.astype(np.float32)

    def commit(self, state: CausalState, tokens: np.ndarray) -> None:
        """Append tokens [B, m, c] at positions n .. n + m - 1."""
        m = tokens.shape[1]
        if state.n + m > self.L:
            raise ValueError(f"cannot commit {m} tokens after {state.n} of {self.L}")
        state.tokens[:, state.n:state.n + m] = self.feedback(tokens)
        state.n += m

    def rollback(self, state: CausalState, m: int) -> None:
        """Drop the last m committed tokens and every cached key past the new prefix (at most n + 1 elements)."""
        if not 0 <= m <= state.n:
            raise ValueError(f"cannot roll back {m} of {state.n} committed tokens")
        state.n -= m
        state.tokens[:, state.n:] = 0
        keep = state.prefix_len - 1 + min(state.cache_len, state.n + 1)
        state.k, state.v = state.k[:, :, :, :keep], state.v[:, :, :, :keep]
        state.key_valid = state.key_valid[:, :keep]
