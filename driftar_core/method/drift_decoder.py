"""The 1-NFE drift decoder, per-token form (Drift-AR Eq. 7-8, Entropy-AdaLN; docs/method.md "Drift decoder (1 NFE)").

A :class:`~driftar_core.interfaces.TokenHead` for per-token heads (MAR, NextStep-1): it replaces the
100-step diffusion MLP with one network evaluation.

    x0 = mu(z) + sigma(E) * eps                  Eq. 7, prior.py (sigma(E) of Eq. 6, floored at sigma_min)
    x  = G(x0 ; z, E)                            one pass (nfe = 1)

G is MAR's SimpleMLPAdaLN without the time embedding: ``input_proj`` (c -> W), ``cond_embed`` of z
(D -> W) as the AdaLN condition, ``res_blocks`` (LayerNorm -> shift/scale -> MLP -> gated residual,
``adaLN_modulation`` zero-initialised) and a ``final_layer`` (AdaLN + Linear W -> c). The output
Linear keeps its default init (docs/method.md "The drift head probe", what worked 4; ``zero_init_output`` restores
MAR's zero init).

The eps skip (``eps_input``, on by default; a driftar addition): h = input_proj(x0) + noise_proj(eps)
with ``noise_proj`` zero-initialised, so at init G sees exactly the paper's x0. Why: the first
LayerNorm makes G blind to the scale of input_proj(x0) = W mu + sigma W eps, so the noise it can turn
into diversity is about sigma / |mu|, and |mu| grows with training even WITHOUT a regression loss on
mu (it reached ~1.5 on the toy). Measured on the 2-mode toy of tests/method (2-d tokens, one positive
per condition, E ~ U[0, 1], 1200 Adam steps, one seed; ratio = per-condition sample spread / true
spread, ED = energy distance to the truth):

    paper-faithful G: sigma in [0, 0.5] -> ratio 0.12, ED 0.38; floor 0.25 -> 0.12, ED 1.75 (collapsed);
                      constant sigma 0.5 -> 0.54, ED 0.14; constant sigma 1.0 (E = 1) -> 1.04, ED 0.08
    with eps skip:    floor 0 / 0.1 / 0.25 -> ratio 1.09 / 0.97 / 1.05, ED 0.064 / 0.083 / 0.065

sigma(E) still sets the prior's spread at init and the speculative tolerance (docs/method.md "Acceptance rule (V1)").
With ``eps_input=False`` (the paper's G) keep sigma >= ~0.5 everywhere (raise sigma_min and sigma_max).

Entropy-AdaLN (docs/method.md "Drift decoder (1 NFE)"), both pathways zero-initialised so E has no effect at init:

- global: e_g -> MLP (1 -> W -> W), added to the condition that drives every AdaLN modulation;
- spatial: e_r -> MLP (1 -> W -> 2W) -> (scale, shift), applied ONCE at the input after
  ``input_proj``: h <- h * (1 + scale) + shift.

In the image-level decoder the global input is the mean of E over the image's tokens. A per-token
head sees one token at a time, so the caller supplies it: ``entropy_global`` [N'] (the image mean of
E, or the mean over the tokens of the current AR step) where the backbone has it; otherwise the
token's own E is used for both pathways. E missing altogether (a backbone built without entropy)
counts as E = 1 (sigma = sigma_max).

Training (Eq. 8, docs/method.md "Drift loss (Eq. 8)"): every token is its own condition. For each
token the head draws G = ``num_generated`` noise samples (>= 16: "The drift head probe"), producing G
outputs that are the generated set; positives are the ground-truth token (plus any extra positives
the caller passes, e.g. every real token sharing an exact condition); negatives are the current G
samples of the same token (self-masked). The drift is computed in the raw token space and,
optionally, in the space of a FROZEN feature map phi (each space its own drift term, summed with
``raw_weight`` / ``phi_weight``). Tokens with mask 0 are dropped before the G-fold expansion.

The phi hook (:meth:`DriftDecoder.set_feature_map`): a callable [M, c] -> [M, F] that the backbone
integration builds from a TRAINED target (its penultimate block behind a token -> width map, as
docs/method.md "The official code" describes), after the target is loaded. It is frozen here, kept out of the decoder's
parameters and state dict (a bundle rebuilt from config has no phi; the trainer re-installs it) and
not moved by ``.to()``: the caller moves it. Gradients flow through phi into the generated tokens only.

CFG at inference (docs/method.md "Drift decoder"): cond and uncond rows in one doubled batch with the SAME eps, then
x = x_u + s * (x_c - x_u). ``temperature`` scales eps.

TODO (later issue): the sequence (cross-attention) form for TransDiff, where G maps the whole
L-token prior to L tokens while cross-attending to z_AR and each token location is a drift problem
over G images of a class (drift_loss.location_problems). Not built here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from driftar_core.method.configs import DriftDecoderConfig  # noqa: F401  (re-export)
from driftar_core.method.drift_loss import DriftLoss, drift_loss
from driftar_core.method.prior import EntropyPrior
from driftar_core.nn.adaln import FinalLayer, ResBlock, modulate, run_blocks
from driftar_core.nn.fused import fused_linear

FeatureMap = Callable[[Tensor], Tensor]


# -------------------------------------------------------------------------------------------------
# Entropy-AdaLN pathways (the AdaLN MLP blocks come from driftar_core.nn.adaln)
# -------------------------------------------------------------------------------------------------


def scalar_mlp(width: int, out_dim: int) -> nn.Sequential:
    """1 -> W -> out_dim, last layer zero-initialised (an Entropy-AdaLN pathway)."""
    mlp = nn.Sequential(nn.Linear(1, width), nn.SiLU(), nn.Linear(width, out_dim))
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


# -------------------------------------------------------------------------------------------------
# The decoder
# -------------------------------------------------------------------------------------------------


@dataclass
class DriftDecoderLoss:
    """loss: scalar; terms: per feature space ("raw", "phi") :class:`DriftLoss`; monitors: 0-dim tensors."""

    loss: Tensor
    terms: dict[str, DriftLoss] = field(default_factory=dict)
    monitors: dict[str, Tensor] = field(default_factory=dict)


class DriftDecoder(nn.Module):
    """Per-token 1-NFE drift head. token_dim = c, z_dim = D; see the module docstring."""

    nfe = 1

    def __init__(self, token_dim: int, z_dim: int, config: DriftDecoderConfig | None = None):
        super().__init__()
        cfg = config if config is not None else DriftDecoderConfig()
        self.config, self.token_dim, self.z_dim = cfg, token_dim, z_dim
        self.noise_shape = (1, token_dim)
        W = cfg.width
        self.prior = EntropyPrior(z_dim, token_dim, sigma_max=cfg.sigma_max, tau=cfg.tau, sigma_min=cfg.sigma_min)
        self.input_proj = nn.Linear(token_dim, W)
        self.noise_proj = nn.Linear(token_dim, W) if cfg.eps_input else None   # zero-init below
        self.cond_embed = nn.Linear(z_dim, W)
        self.entropy_global = scalar_mlp(W, W)            # Entropy-AdaLN, global pathway
        self.entropy_spatial = scalar_mlp(W, 2 * W)       # Entropy-AdaLN, spatial pathway
        self.res_blocks = nn.ModuleList(ResBlock(W, eps=cfg.norm_eps) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(W, token_dim, cfg.norm_eps)
        self._init_weights()
        self.__dict__["phi"] = None                       # frozen feature map, deliberately unregistered
        self.last_monitors: dict[str, Tensor] = {}

    def _init_weights(self) -> None:
        """MAR's init: xavier Linears, zero biases, zero AdaLN modulations (identity blocks)."""
        pathways = {id(m) for m in (*self.entropy_global, *self.entropy_spatial)}
        for m in self.modules():
            if isinstance(m, nn.Linear) and id(m) not in pathways:
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for mod in [*(b.adaLN_modulation[-1] for b in self.res_blocks), self.final_layer.adaLN_modulation[-1]]:
            nn.init.zeros_(mod.weight)
            nn.init.zeros_(mod.bias)
        if self.noise_proj is not None:
            nn.init.zeros_(self.noise_proj.weight)
            nn.init.zeros_(self.noise_proj.bias)
        if self.config.zero_init_output:
            nn.init.zeros_(self.final_layer.linear.weight)

    # ---- phi hook ---------------------------------------------------------------------------------

    def set_feature_map(self, phi: FeatureMap | None) -> None:
        """Install (or remove, None) the frozen feature map phi: [M, c] -> [M, F]; see the module docstring."""
        if isinstance(phi, nn.Module):
            phi.requires_grad_(False).eval()
        self.__dict__["phi"] = phi

    # ---- network ------------------------------------------------------------------------------------

    def _entropies(self, z: Tensor, entropy: Tensor | None, entropy_global: Tensor | None) -> tuple[Tensor, Tensor]:
        """-> (E per token [N'], global E [N']), float, E missing -> 1, global missing -> per-token E."""
        if entropy is None:
            entropy = z.new_ones(z.shape[0])
        entropy = entropy.to(z.dtype)
        return entropy, (entropy if entropy_global is None else entropy_global.to(z.dtype))

    def net(self, x0: Tensor, eps: Tensor, z: Tensor, e_tok: Tensor, e_glob: Tensor) -> Tensor:
        """G: x0 [M, c] or [M, G, c], eps (x0's shape), z [M, D], e_tok [M], e_glob [M] -> x of x0's shape."""
        if e_glob is e_tok:                                                    # one E: both first layers at once
            first = fused_linear(self, "entropy", (self.entropy_spatial[0], self.entropy_global[0]), e_tok[:, None])
            h_spatial, h_global = F.silu(first).chunk(2, dim=-1)               # [M, W] each
            spatial, global_ = self.entropy_spatial[2](h_spatial), self.entropy_global[2](h_global)
        else:
            spatial, global_ = self.entropy_spatial(e_tok[:, None]), self.entropy_global(e_glob[:, None])
        scale, shift = spatial.chunk(2, dim=-1)                                # [M, W] each
        y = self.cond_embed(z) + global_                                       # [M, W] AdaLN condition
        if x0.dim() == 3:                                                      # G samples share z and E
            scale, shift, y = scale[:, None], shift[:, None], y[:, None]       # [M, 1, W]
        h = self.input_proj(x0)                                                # [M, (G,) W]
        if self.noise_proj is not None:
            h = h + self.noise_proj(eps)                                       # [M, (G,) W] eps skip
        h = modulate(h, shift, scale)                                          # [M, (G,) W] spatial, once
        return run_blocks(self, h, y)                                          # [M, (G,) c] blocks + final

    # ---- TokenHead ----------------------------------------------------------------------------------

    def sample(self, z: Tensor, noise: Tensor, cfg: float = 1.0, temperature: float = 1.0,
               entropy: Tensor | None = None, *, entropy_global: Tensor | None = None) -> Tensor:
        """z [N', D] (N' = 2N with CFG: [cond; uncond]), noise [N, 1, c], entropy [N'] -> tokens [N, c].

        One network evaluation on the doubled batch; CFG on the outputs with shared noise.
        """
        N = noise.shape[0]
        eps = noise.reshape(N, self.token_dim).to(z.dtype) * temperature       # [N, c]
        doubled = z.shape[0] == 2 * N
        if doubled:
            eps = torch.cat([eps, eps])                                        # [2N, c] same eps for both halves
        elif z.shape[0] != N:
            raise ValueError(f"z has {z.shape[0]} rows but noise has {N}: expected N (no CFG) or 2N ([cond; uncond])")
        elif cfg != 1.0:
            raise ValueError(f"cfg={cfg} needs z with 2N rows ([cond; uncond]); got N={N} rows")
        e_tok, e_glob = self._entropies(z, entropy, entropy_global)            # [N'] each
        x = self.decode(z, e_tok, e_glob, eps)                                 # [N', c]
        if doubled:
            x_c, x_u = x.chunk(2)                                              # [N, c] each
            x = x_u + cfg * (x_c - x_u)                                        # [N, c]
        return x

    def decode(self, z: Tensor, entropy: Tensor, entropy_global: Tensor, eps: Tensor) -> Tensor:
        """The one network call of sampling (the exported ``decoder`` graph): z [N', D], E [N'], image-level
        E [N'], eps [N', c] (already scaled by the temperature) -> tokens [N', c].

            x0 = mu(z) + sigma(E) * eps        Eq. 7 (prior.py; sigma of Eq. 6 with the sigma_min floor)
            x  = G(x0 ; z, E, E_global)        one pass, Entropy-AdaLN
        """
        e_tok, e_glob = entropy.to(z.dtype), entropy_global.to(z.dtype)
        x0 = self.prior(z, e_tok, eps)                                         # [N', c] Eq. 7
        return self.net(x0, eps, z, e_tok, e_glob)                             # [N', c]

    def loss_terms(self, target: Tensor, z: Tensor, mask: Tensor | None = None, entropy: Tensor | None = None, *,
                   entropy_global: Tensor | None = None, positives: Tensor | None = None,
                   positive_weight: Tensor | None = None, generator: torch.Generator | None = None) -> DriftDecoderLoss:
        """Eq. 8 per token: target [N, c], z [N, D], mask [N], entropy [N], positives [N, C, c] extra,
        positive_weight [N, 1 + C] -> :class:`DriftDecoderLoss` (gradient into the head, the prior and z)."""
        cfg = self.config
        e_tok, e_glob = self._entropies(z, entropy, entropy_global)            # [N] each
        pos = target[:, None]                                                  # [N, 1, c]
        if positives is not None:
            pos = torch.cat([pos, positives.to(target.dtype)], dim=1)          # [N, 1 + C, c]
        weight = None
        if mask is not None:                                                   # drop mask-0 tokens before x G
            keep = mask > 0
            z, e_tok, e_glob, pos, weight = z[keep], e_tok[keep], e_glob[keep], pos[keep], mask[keep].float()
            positive_weight = None if positive_weight is None else positive_weight[keep]
        N, G = z.shape[0], cfg.num_generated
        if N == 0:                                                             # keep every parameter in the graph
            zero = sum(p.sum() for p in self.parameters()) * 0.0
            return DriftDecoderLoss(loss=zero)
        eps = torch.randn(N, G, self.token_dim, generator=generator, device=z.device, dtype=z.dtype)
        x0 = self.prior(z, e_tok, eps)                                         # [N, G, c]
        x = self.net(x0, eps, z, e_tok, e_glob)                                # [N, G, c] generated set

        terms = {"raw": drift_loss(x, pos, weight=weight, pos_weight=positive_weight, temperatures=cfg.temperatures)}
        loss = cfg.raw_weight * terms["raw"].loss
        phi = self.__dict__["phi"]
        if phi is not None:
            f_gen = phi(x.flatten(0, 1)).unflatten(0, (N, G))                  # [N, G, F]
            with torch.no_grad():
                f_pos = phi(pos.flatten(0, 1)).unflatten(0, pos.shape[:2])     # [N, C_p, F]
            terms["phi"] = drift_loss(f_gen, f_pos, weight=weight, pos_weight=positive_weight,
                                      temperatures=cfg.temperatures)
            loss = loss + cfg.phi_weight * terms["phi"].loss
        monitors: dict[str, Tensor] = {}
        for name, term in terms.items():
            m = term.monitors
            monitors.update({f"{name}_scale": m.scale, f"{name}_gen_spread": m.gen_spread})
            if pos.shape[1] > 1:
                monitors.update({f"{name}_pos_spread": m.pos_spread, f"{name}_spread_ratio": m.spread_ratio})
        monitors["sigma_mean"] = self.prior.sigma(e_tok).mean().detach()
        return DriftDecoderLoss(loss=loss, terms=terms, monitors=monitors)

    def loss(self, target: Tensor, z: Tensor, mask: Tensor | None = None, entropy: Tensor | None = None,
             **kwargs) -> Tensor:
        """TokenHead.loss: the scalar of :meth:`loss_terms`; its monitors land in ``self.last_monitors``."""
        out = self.loss_terms(target, z, mask, entropy, **kwargs)
        self.last_monitors = out.monitors
        return out.loss
