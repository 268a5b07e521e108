"""Configs of the Drift-AR components, torch-free so that plugin modules can import them cheaply
(``driftar plugins`` and ``driftar --help`` never import torch). Every default lives here.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from driftar_core.config import Strict

TEMPERATURES = (0.02, 0.05, 0.2)   # docs/method.md "Official defaults"; R of "The drifting recipe"
SIGMA_MAX = 0.5     # docs/method.md "Official defaults"
TAU_SIGMA = 2.0     # docs/method.md "Official defaults" (near-linear map)


class DriftDecoderConfig(Strict):
    """Every default of the per-token drift decoder (the backbone's model config embeds and overrides it)."""

    width: int = Field(256, ge=1)          # W; probe: 128 for 4-dim tokens; MAR's head is 1024 on ImageNet
    depth: int = Field(3, ge=1)            # residual AdaLN blocks; MAR's default head depth, the probe's 3
    num_generated: int = Field(16, ge=2)   # G per token: 8 was worse than 16 (docs/method.md "The drift head probe")
    temperatures: tuple[float, ...] = TEMPERATURES  # drift kernel temperatures (docs/method.md "The drifting recipe")
    sigma_max: float = Field(SIGMA_MAX, gt=0)       # Eq. 6, official default
    tau: float = Field(TAU_SIGMA, gt=0)             # Eq. 6, official default
    sigma_min: float = Field(0.1, ge=0)    # floor on sigma(E) (docs/method.md "Prior (Eq. 6-7)"); safe with eps_input
    raw_weight: float = Field(1.0, ge=0)   # drift term in raw token space
    phi_weight: float = Field(1.0, ge=0)   # drift term in the frozen phi feature space (when installed)
    eps_input: bool = True                 # also feed eps itself (zero-init ``noise_proj``); see the module docstring
    zero_init_output: bool = False         # MAR zero-inits the output Linear; the probe's drift head did not
    norm_eps: float = 1e-6                 # LayerNorm eps (MAR)

    @model_validator(mode="after")
    def _sigma_range(self) -> "DriftDecoderConfig":
        if self.sigma_min > self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) must not exceed sigma_max ({self.sigma_max})")
        return self


class DraftConfig(Strict):
    """The transformer draft (method/draft.py, Eq. 3): a causal transformer over the target's features z,
    its blocks copied from the target's first blocks (MAR's draft)."""

    kind: Literal["transformer"] = "transformer"
    dim: int = Field(256, ge=1)             # must equal the target's feature width D
    depth: int = Field(2, ge=1)             # official: 6 of 24-40 target blocks; tiny targets have ~4-8
    num_heads: int = Field(4, ge=1)         # must equal the target's heads to copy its blocks
    mlp_ratio: float = Field(4.0, gt=0)     # timm / MAR ViT blocks
    qkv_bias: bool = True                   # MAR's blocks use qkv_bias=True
    norm_eps: float = 1e-6                  # MAR's LayerNorm eps
    token_dim: int | None = None            # c for the EAGLE-style token input; None = features only
    entropy_weight: float = Field(1.0, ge=0)  # lambda of L_ent; official L_reg + L_ent weigh 1:1 (Eq. 9)
    smooth_l1_beta: float = Field(1.0, gt=0)  # SmoothL1 transition point (torch default)


class LayerDraftConfig(Strict):
    """A self-speculative draft: the target's own first ``depth`` layers with their own cache, copied from
    the trained target and trained by Eq. 3 + entropy alignment (a ``TokenDraft``: one head call per
    drafted token). The backbone plugin builds it (NextStep-1's, the example backbone's)."""

    kind: Literal["layer"] = "layer"
    depth: int = Field(1, ge=1)             # target layers copied; <= the target's depth
    entropy_weight: float = Field(1.0, ge=0)  # lambda of L_ent (Eq. 9, 1:1 with L_reg officially)
    smooth_l1_beta: float = Field(1.0, gt=0)  # SmoothL1 transition point of L_reg (Eq. 3)


class WindowDraftConfig(Strict):
    """Every default of the feature-level window draft (method/window_draft.py) and its distillation.

    Sizes measured on nextstep1_tiny_drift.digits (offline, 512 held-out rollouts, 1000 steps): a window
    of 1 position reached 0.80 / 0.54 / 0.36 / 0.22 prefix acceptance at draft steps 1-4, a window of 8
    (the token grid's width: the row above is in view) 0.88 / 0.76 / 0.67 / 0.58.
    """

    kind: Literal["window"] = "window"
    window: int = Field(8, ge=1)            # positions the MLP sees (the latest last)
    width: int = Field(256, ge=1)           # MLP width
    depth: int = Field(2, ge=0)             # residual MLP blocks
    rollouts: int = Field(8192, ge=2)       # self-distillation sequences sampled with the model's own sampler
    rollout_batch: int = Field(512, ge=1)   # samples per rollout batch
    unroll: int = Field(6, ge=1)            # self-feed steps per training example (>= the draft length used)
    reg_weight: float = Field(1.0, ge=0)    # Eq. 3: SmoothL1 on the next position's z (cond and uncond rows)
    entropy_weight: float = Field(1.0, ge=0)  # |E_draft - sg E_target| (the entropy alignment)
    token_weight: float = Field(1.0, ge=0)  # || g(z_draft) - x ||^2 through the frozen head: what acceptance tests
    smooth_l1_beta: float = Field(1.0, gt=0)


class SpeculativeConfig(Strict):
    """Defaults of speculative decoding (docs/method.md "Speculative decoding"; driftar_core.speculative).

    A backbone config embeds it as ``speculative`` when its Drift-AR bundle samples speculatively by
    default. The tolerance tau0 + kappa * sigma(E_target) is in token RMS units; tau0 = kappa = 0
    reproduces sequential decoding exactly.
    """

    enabled: bool = True                    # the bundle's default sampler (driftar sample --no-speculative)
    draft_len: int = Field(4, ge=0)         # k drafts per round (docs/method.md "Speculative decoding")
    tau0: float = Field(0.0, ge=0)          # absolute part of the acceptance tolerance
    # entropy-scaled part: kappa * sigma(E_target). 0.35 from the kappa sweeps of nextstep1_tiny_drift.digits
    # (BENCHMARKS.md): layer draft, k = 4: 68% acceptance, 3.6x fewer target passes, FD 1.07x the sequential
    # decoder's; window draft, k = 6: 79% acceptance, 5.2x fewer target passes, FD 0.97x, PSNR 28.5 dB.
    kappa: float = Field(0.35, ge=0)
    early_stop_gamma: float | None = Field(None, gt=0)  # stop drafting below gamma * EMA(target E)
    entropy_ema_init: float | None = Field(None, ge=0, le=1)  # the EMA's start: mean target E on training data
    # the default sampler speculates only for batches of at most max_batch samples: a batch commits the
    # minimum accepted length over its samples, so acceptance collapses with batch size (68% at batch 1,
    # 6.7% at batch 40 on nextstep1_tiny_drift.digits) and the drafts become pure overhead. Larger
    # batches decode sequentially. `driftar sample --speculative` speculates at any batch size.
    max_batch: int = Field(1, ge=1)


# The draft of a Drift-AR model, by kind (a pydantic discriminated union on ``kind``).
DraftSpec = Annotated[Union[DraftConfig, LayerDraftConfig, WindowDraftConfig], Field(discriminator="kind")]


class DriftARConfig(Strict):
    """Drift-AR's section of a backbone config: every backbone's model config embeds it as ``drift_ar``
    (used when the model's ``head_type`` is ``"drift"``), with its own defaults; the core builds the
    bundle from it (``driftar_core.method.assemble.drift_ar_bundle``). docs/method.md has the equations.
    """

    decoder: DriftDecoderConfig = Field(default_factory=DriftDecoderConfig)   # the 1-NFE drift decoder
    draft: DraftSpec = Field(default_factory=LayerDraftConfig)                # the draft, by kind
    # the speculative sampler's settings; None: the model samples plainly and has no default settings
    # (masked backbones such as MAR predict many tokens per step and do not speculate)
    speculative: SpeculativeConfig | None = None

    def check_draft_kind(self, backbone: str, *kinds: str) -> None:
        """For a backbone config's validator: refuse a draft kind the backbone does not build."""
        if self.draft.kind not in kinds:
            raise ValueError(f"{backbone} builds drafts of kind {' or '.join(map(repr, kinds))}; "
                             f"drift_ar.draft.kind is {self.draft.kind!r}")


def move_legacy_keys(data: Any, moves: dict[str, str]) -> Any:
    """Configs saved before the ``drift_ar`` section existed kept its fields at the top level:
    move ``old -> drift_ar.<new>`` for a ``model_validator(mode="before")``. New keys win over old ones."""
    if not isinstance(data, dict) or not any(old in data for old in moves):
        return data
    data = dict(data)
    section = dict(data.get("drift_ar") or {})
    for old, new in moves.items():
        if old in data:
            section.setdefault(new, data.pop(old))
    data["drift_ar"] = section
    return data


class SamplerSpec(Strict):
    """A bundle's default sampler, as data: ``driftar sample``, ``eval``, ``bench`` and the exporter read
    it (``driftar_core.speculative.make_sampler`` turns it into the sampling function).

    ``plain``: ``driftar_core.sampling.generate``; ``speculative``: ``speculative_generate`` with the
    settings of ``speculative`` for batches of at most ``speculative.max_batch`` samples, plain above.
    """

    kind: Literal["plain", "speculative"] = "plain"
    # the model's speculative settings: used by default when kind is "speculative", on request otherwise
    speculative: SpeculativeConfig | None = None

    @model_validator(mode="after")
    def _settings_for_speculation(self) -> "SamplerSpec":
        if self.kind == "speculative" and self.speculative is None:
            raise ValueError("a speculative sampler needs its speculative settings (SpeculativeConfig)")
        return self

    @classmethod
    def from_config(cls, speculative: SpeculativeConfig | None) -> "SamplerSpec":
        """Speculative when the model config has speculative settings and they are enabled, else plain
        (the settings kept for ``--speculative``)."""
        kind = "speculative" if speculative is not None and speculative.enabled else "plain"
        return cls(kind=kind, speculative=speculative)
