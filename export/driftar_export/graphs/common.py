"""Graphs every Drift-AR bundle exports: the 1-NFE drift decoder and the tokenizer's decode.

``decoder`` is DriftDecoder.sample without its host-side parts (driftar_core/method/drift_decoder.py):

    x0 = mu(z) + sigma(E) * eps          Eq. 7 (prior.py; sigma of Eq. 6 with the sigma_min floor)
    x  = G(x0 ; z, E, E_global)          one pass, Entropy-AdaLN

Rows are N' = N or 2N ([cond; uncond]); the host scales eps by the temperature, repeats it for the
uncond half (the same eps for both, as ``sample`` does) and applies CFG on the outputs
(x_u + s (x_c - x_u), a per-row s in a speculative round). The graph also returns sigma(E) per row:
the speculative acceptance tolerance tau0 + kappa * sigma(E) (METHOD.md 4.2.1) needs it, and this
way the host carries no copy of Eq. 6.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from driftar_export.graphs.spec import IO, DimRange, GraphSpec, rand, randn


class DecoderGraph(nn.Module):
    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, z: Tensor, entropy: Tensor, entropy_global: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """z [N', D], entropy [N'], entropy_global [N'], eps [N', c] -> tokens [N', c], sigma [N']."""
        e_tok, e_glob = entropy.to(z.dtype), entropy_global.to(z.dtype)
        x0 = self.head.prior(z, e_tok, eps)                                 # [N', c]  Eq. 7
        x = self.head.net(x0, eps, z, e_tok, e_glob)                         # [N', c]  one NFE
        return x, self.head.prior.sigma(e_tok)                               # [N', c], [N']


class DetokenizeGraph(nn.Module):
    def __init__(self, tokenizer: Any):
        super().__init__()
        self.tokenizer = tokenizer

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B, L, c] -> images [B, C, H, W] in [-1, 1] (the samplers' ``decode(...).clamp(-1, 1)``)."""
        return self.tokenizer.decode(tokens).clamp(-1, 1)


def decoder_spec(head: nn.Module, max_rows: int) -> GraphSpec:
    """The ``decoder`` graph; ``max_rows`` = the most head rows one AR step (or round) hands it."""
    D, c = head.z_dim, head.token_dim

    def make(d: dict[str, int], g: torch.Generator) -> tuple[Tensor, ...]:
        n = d["rows"]
        return randn((n, D), g), rand((n,), g), rand((n,), g), randn((n, c), g)

    return GraphSpec(
        role="decoder", module=DecoderGraph(head).eval(),
        inputs=[IO("z", "float32", ("rows", D)), IO("entropy", "float32", ("rows",)),
                IO("entropy_global", "float32", ("rows",)), IO("eps", "float32", ("rows", c))],
        outputs=["tokens", "sigma"], dims={"rows": DimRange.spread(1, max_rows)}, make_inputs=make,
        description="1-NFE drift decoder: prior mu(z) + sigma(E) eps, then G (Entropy-AdaLN); CFG on the host")


def detokenize_spec(tokenizer: Any, max_batch: int) -> GraphSpec:
    L, c = tokenizer.token_shape

    def make(d: dict[str, int], g: torch.Generator) -> tuple[Tensor, ...]:
        return (randn((d["batch"], L, c), g, 0.7),)

    return GraphSpec(
        role="detokenize", module=DetokenizeGraph(tokenizer).eval(),
        inputs=[IO("tokens", "float32", ("batch", L, c))], outputs=["images"],
        dims={"batch": DimRange.spread(1, max_batch)}, make_inputs=make,
        description="tokenizer.decode, clamped to [-1, 1]")
