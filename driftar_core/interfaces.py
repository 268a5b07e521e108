"""The seams of driftar: small protocols that every backbone, head, tokenizer and draft satisfies.

The data flow of one generation (see docs/layout.md):

    condition -> ARBackbone.step (z [B,n,D], E [B,n]) -> TokenHead.sample (tokens [B,n,c])
              -> ARBackbone.commit -> ... over ARBackbone.plan ... -> Tokenizer.decode -> images

Shapes: B = batch, L = tokens per image, c = token channels, D = width of the condition z that the
backbone hands to the head, n = positions handled in one AR step, N = flattened tokens (B * n).

Nothing here imports torch at module import time, so `driftar --help` stays fast. Sampling loops are
functions over these objects (driftar_core.sampling), never methods of a network (DiT's sample.py,
MAR's DiffLoss two-method seam).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import Tensor


# ---------------------------------------------------------------------------------------------
# Plain containers passed across the seams
# ---------------------------------------------------------------------------------------------


@dataclass
class Step:
    """One AR step of a backbone's plan.

    positions: LongTensor [B, n], the token positions generated at this step (per sample; MAR's
        random order makes them differ across samples, n is the same for all samples).
    progress: fraction of the sequence that is known AFTER this step, in (0, 1]. The linear CFG
        ramp (MAR, Muse) uses it: cfg_k = 1 + (cfg - 1) * progress.
    """

    positions: "Tensor"
    progress: float


@dataclass
class StepOutput:
    """What one backbone forward hands to the head.

    z: [B', n, D] head condition for the requested positions. B' = B without CFG, 2B with CFG
        (rows [cond; uncond], the null condition second, as MAR/TransDiff order them).
    entropy: [B', n] causal-normalised attention entropy E in [0, 1] of the penultimate block
        (Drift-AR Eq. 4), from the SAME forward; None if the backbone was built without it.
    """

    z: "Tensor"
    entropy: "Tensor | None" = None
    entropy_global: "Tensor | None" = None  # [B'] image-level E (mean over all positions), Entropy-AdaLN's global input


@dataclass
class TrainOutput:
    """Teacher-forced training forward of a backbone.

    z: [B, L, D] head condition for every position.
    loss_mask: [B, L] float, 1 where the head loss counts (MAR: the masked tokens).
    entropy: [B, L] or None (as in StepOutput).
    aux_loss: scalar tensor of backbone-side losses (NextStep-1's text CE), or None.
    cond: the condition as the forward used it (after CFG dropout, e.g. NextStep-1's prompts), or None;
        a model trained alongside (the draft) must see the same one.
    inputs: [B, L, c] the tokens the forward consumed (after input noise), or None = the given tokens.
    """

    z: "Tensor"
    loss_mask: "Tensor"
    entropy: "Tensor | None" = None
    aux_loss: "Tensor | None" = None
    cond: Any = None
    inputs: "Tensor | None" = None


@dataclass
class PassCounts:
    """Forward passes made by one sampling call; every loop in driftar fills one of these.

    backbone_passes: sequential target forwards (a CFG-doubled batch counts once).
    head_nfe: sequential head network evaluations (summed over AR steps).
    draft_passes: sequential draft forwards (speculative decoding only).
    """

    backbone_passes: int = 0
    head_nfe: int = 0
    draft_passes: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def nfe(self) -> int:
        """Sequential network evaluations per image: backbone + head + draft."""
        return self.backbone_passes + self.head_nfe + self.draft_passes

    def as_dict(self) -> dict[str, Any]:
        return {
            "backbone_passes": self.backbone_passes,
            "head_nfe": self.head_nfe,
            "draft_passes": self.draft_passes,
            "nfe": self.nfe,
            **self.extra,
        }


# ---------------------------------------------------------------------------------------------
# Protocols
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class Tokenizer(Protocol):
    """Images <-> continuous tokens.

    token_shape: (L, c). image_shape: (C, H, W). Images are float in [-1, 1].
    """

    token_shape: tuple[int, int]
    image_shape: tuple[int, int, int]

    def encode(self, images: "Tensor") -> "Tensor":
        """images [B, C, H, W] in [-1, 1] -> tokens [B, L, c]."""
        ...

    def decode(self, tokens: "Tensor") -> "Tensor":
        """tokens [B, L, c] -> images [B, C, H, W] (not clamped)."""
        ...


@runtime_checkable
class TokenHead(Protocol):
    """The vision decoder: turns a condition z into a token. The AR model never knows which head it has.

    nfe: sequential network evaluations per `sample` call (100 for MAR's DDPM head, 1 for Drift-AR).
    noise_shape: (k, c), the noise one token consumes; the sampler draws it ONCE per position as
        noise [N, k, c] so that draft and target heads can share it (speculative decoding) and a
        fixed seed reproduces a run.
    """

    nfe: int
    noise_shape: tuple[int, int]

    def loss(self, target: "Tensor", z: "Tensor", mask: "Tensor | None" = None,
             entropy: "Tensor | None" = None) -> "Tensor":
        """target [N, c], z [N, D], mask [N] (1 = counts), entropy [N] -> scalar loss."""
        ...

    def sample(self, z: "Tensor", noise: "Tensor", cfg: float = 1.0, temperature: float = 1.0,
               entropy: "Tensor | None" = None) -> "Tensor":
        """z [N', D] (N' = 2N with CFG: [cond; uncond]), noise [N, k, c], entropy [N'] -> tokens [N, c]."""
        ...


@runtime_checkable
class ARBackbone(Protocol):
    """The target AR model. The state object is the backbone's own (known set, KV cache, ...).

    MAR: masked bidirectional, plan = cosine mask schedule over a per-sample random order.
    NextStep-1: causal with a KV cache, plan = one token per step in raster order.
    TransDiff: one step for all tokens.
    """

    token_shape: tuple[int, int]
    z_dim: int

    def new_state(self, cond: Any, num_iter: int, cfg: bool, generator: "torch.Generator | None" = None) -> Any:
        """A fresh generation state for `cond` (labels [B] or prompts), doubled internally when cfg."""
        ...

    def plan(self, state: Any) -> list[Step]:
        """The AR step schedule for this state (positions per step)."""
        ...

    def step(self, state: Any, positions: "Tensor") -> StepOutput:
        """One forward: z and E for positions [B, n] given what the state knows."""
        ...

    def commit(self, state: Any, positions: "Tensor", tokens: "Tensor") -> None:
        """Write tokens [B, n, c] at positions [B, n] into the state."""
        ...

    def tokens(self, state: Any) -> "Tensor":
        """The committed tokens [B, L, c] of the (cond half of the) state."""
        ...

    def forward_train(self, tokens: "Tensor", cond: Any, generator: "torch.Generator | None" = None) -> TrainOutput:
        """Teacher-forced forward over ground-truth tokens [B, L, c]."""
        ...


@runtime_checkable
class SpeculativeBackbone(ARBackbone, Protocol):
    """A backbone that can verify k drafted tokens in one forward and roll its state back."""

    def verify(self, state: Any, tokens: "Tensor") -> StepOutput:
        """tokens [B, k, c] appended after the committed prefix -> z, E for all k+1 next positions."""
        ...

    def rollback(self, state: Any, n: int) -> None:
        """Drop the last n committed positions (KV cache and known set)."""
        ...


@runtime_checkable
class EntropyEstimator(Protocol):
    """Attention rows of the penultimate block -> causal-normalised entropy E (Drift-AR Eq. 4)."""

    def __call__(self, attn: "Tensor", visible: "Tensor | None" = None) -> "Tensor":
        """attn [B, H, Q, K] (rows sum to 1), visible [B or 1, Q, K] bool -> E [B, Q] in [0, 1]."""
        ...


@runtime_checkable
class TrainableDraft(Protocol):
    """A draft trained with the target by the drift recipe (Drift-AR Eq. 3 + the entropy alignment):
    driftar_core.method.draft.DraftModel (MAR), NextStep-1's layer draft."""

    def loss_terms(self, z: "Tensor", target_entropy: "Tensor | None" = None, **inputs: Any) -> "dict[str, Tensor]":
        """sg target z [B, L, D], sg target E [B, L] (+ the tokens / cond the target consumed when the backbone
        declares ``DriftARSupport.draft_inputs``) -> {"loss", ...monitors}."""
        ...


@runtime_checkable
class TokenDraft(Protocol):
    """A token-level speculative draft: its own state (KV cache) over the committed tokens; each step's z
    goes through the bundle's head to give the drafted token (driftar_core.speculative)."""

    def new_state(self, cond: Any, num_iter: int, cfg: bool, generator: Any = None) -> Any:
        ...

    def step(self, state: Any, positions: "Tensor") -> StepOutput:
        ...

    def commit(self, state: Any, positions: "Tensor", tokens: "Tensor") -> None:
        ...

    def rollback(self, state: Any, n: int) -> None:
        ...


@runtime_checkable
class FeatureDraft(Protocol):
    """A feature-level draft (driftar_core.method.window_draft.WindowDraft): it proposes the next k
    positions' head conditions without a head call, and the speculative sampler decodes all k with ONE
    batched head call per round."""

    def new_state(self, cond: Any, num_iter: int | None = None, cfg: bool = False,
                  generator: Any = None) -> Any:
        ...

    def observe(self, state: Any, out: StepOutput, noise: "Tensor") -> None:
        """The target's z [B', m, D], E [B', m] and the noise [B, m, c] of the next m committed positions."""
        ...

    def propose(self, state: Any, noise: "Tensor") -> StepOutput:
        """noise [B, k, c] of the next k positions -> drafted z [B', k, D], E [B', k]."""
        ...


# ---------------------------------------------------------------------------------------------
# What a backbone plugin declares so that Drift-AR applies to it (docs/plugins.md, "Drift-AR")
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftARSupport:
    """Declared in ``BackboneSpec(drift=...)``; the drift recipe reads nothing else of the backbone.

    init_components: ``(bundle) -> None``, called once the trained baseline's backbone is loaded into
        ``bundle``: copy the frozen feature map ``bundle.phi`` and the draft's initial weights from the
        trained target (never from a random one: docs/method.md "Two-phase training").
    entropy: the E that the drift decoder's Entropy-AdaLN global input sees in training. ``"token"``:
        each token's own E (a causal backbone samples token by token, so that is what sampling sees);
        ``"image_mean"``: the image mean of E (a masked backbone, whose sampler sees it per step).
    draft_inputs: the draft's ``loss_terms`` takes ``tokens=`` and ``cond=`` (what the target consumed).
    """

    init_components: Callable[[Any], None]
    entropy: Literal["token", "image_mean"] = "image_mean"
    draft_inputs: bool = False


# ---------------------------------------------------------------------------------------------
# What an exporter plugin registers (``driftar_register_exporters``, docs/plugins.md "Export")
# ---------------------------------------------------------------------------------------------


class Exporter:
    """Base of an export target: ``driftar export --target NAME`` and ``driftar bench --models NAME:DIR``.

    ``driftar export`` calls ``preflight(**options)`` and ``check_out(out)`` before the model is loaded
    (fail fast: a missing toolkit, a destination that holds someone else's files), then
    ``exporter(bundle, out, ref=..., log=..., **options)``. Override what applies; the defaults accept.
    """

    name = "exporter"

    def preflight(self, **options: Any) -> Any:
        """Validate the options (and the toolkit) before any work; raise ValueError naming the problem."""
        return options

    def check_out(self, out_dir: Any) -> Any:
        """Check that ``out_dir`` can be written without losing anything already there."""
        return out_dir

    def __call__(self, bundle: Any, out_dir: Any, ref: str | None = None, log: Any = print, **options: Any) -> Any:
        raise NotImplementedError(f"exporter {self.name!r} does not implement __call__")

    def load_runner(self, directory: Any, **kwargs: Any) -> Any:
        """A runner of an exported directory with the bundle's sampling API (``driftar bench``, ``run``)."""
        raise ValueError(f"exporter {self.name!r} has no runner for {directory} (load_runner)")
