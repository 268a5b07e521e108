"""MARConfig: every default of the MAR model (tokenizer slot, backbone, DiffLoss head, sampling).

The defaults ARE the tiny CPU model (``mar_tiny``): 16x16 digits cut into 2x2 patches (L = 64 tokens of
c = 4 channels). The paper's sizes are presets in ``driftar_mar.presets.PRESETS``. Sources: MAR
(Li et al. 2024, arXiv 2406.11838) and the official code LTH14/mar (models/mar.py, models/diffloss.py,
main_mar.py); docs/backbones.md "MAR". Pure pydantic: importing this module does not
import torch, so the plugin module can register the config class cheaply.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from driftar_core.config import ModelConfig, SamplingConfig, Strict
from driftar_core.method.configs import DraftConfig, DriftARConfig, DriftDecoderConfig, move_legacy_keys


class DiffLossConfig(Strict):
    """MAR's per-token DDPM head (``diffloss``): SimpleMLPAdaLN + a 1000-step cosine IDDPM."""

    depth: int = Field(3, ge=1)             # res blocks; official B/L/H 6/8/12, README recipe 3
    width: int = Field(96, ge=1)            # official 1024/1280/1536; the head is most of the CPU step
    num_sampling_steps: int = Field(100, ge=1, le=1000) # respaced DDPM steps at sampling (MAR passes the string "100")
    diffusion_batch_mul: int = Field(4, ge=1) # each token repeated with independent t and noise (MAR)
    learn_sigma: bool = True            # learned-range variance + hybrid VLB loss (MAR); False = fixed-large
    # Clip the predicted x0 to [-v, v] (token units) at sampling. MAR's latents: off (None, the paper
    # presets). The tiny head needs it: the first respaced step (t = 999, abar = 2.4e-9) multiplies
    # eps errors by ~316, and a head trained for minutes still has eps RMS error ~0.04 there, so
    # unclipped samples reach |x| ~ 1e3-1e4, learned variance or not (docs/method.md "The
    # drift head probe", the pitfall; measured on the digits toy). Pixel tokens live in [-1, 1] * token_scale.
    clip_x0: float | None = 1.0

    @model_validator(mode="after")
    def _check(self) -> "DiffLossConfig":
        if self.num_sampling_steps < 1 or self.num_sampling_steps > 1000:
            raise ValueError(f"num_sampling_steps must be in [1, 1000], got {self.num_sampling_steps}")
        return self


def _tiny_sampling() -> SamplingConfig:
    # K = 16 AR steps for L = 64 tokens (the demo's 64 for 256 tokens, scaled by L; K = 64 was no
    # better on digits); linear CFG ramp and temperature 1 as the MAR README's eval setting; cfg 3 as
    # MAR-B/L/H's 2.9-3.2 (2 and 5 were as class-correct on digits; 0.8 gives smoother strokes).
    return SamplingConfig(num_iter=16, cfg=3.0, cfg_schedule="linear", temperature=1.0)


def _tiny_drift_ar() -> DriftARConfig:
    # Drift-AR (used when head_type == "drift"): decoder width 128 x 3 blocks as the probe's head (max one
    # token per condition per step is the per-token form, docs/method.md); the draft (Eq. 3) over the
    # decoder features: 1 transformer block copied from the trained target's first decoder block. MAR is
    # masked (many tokens per step): it does not speculate, so no speculative settings.
    return DriftARConfig(decoder=DriftDecoderConfig(width=128, depth=3),
                         draft=DraftConfig(dim=96, depth=1, num_heads=4))


class MARConfig(ModelConfig):
    """The whole MAR model. Validated on load; unknown keys fail (extra="forbid")."""

    # tokenizer (the ``patch`` tokenizer; real runs use the KL-16 VAE latent, 16x16x16 at 256 px)
    img_size: int = Field(16, ge=1)         # digits upsampled 8 -> 16 (driftar_core/data/digits.py)
    channels: int = Field(1, ge=1)          # grey digits; 16 for a KL-16 latent
    patch_size: int = Field(2, ge=1)        # 2x2 patches -> L = 64 tokens of c = 4 channels
    token_scale: float = Field(1.0, gt=0)   # tokens = patches * scale; KL-16 latents use 0.2325

    # conditioning
    class_num: int = Field(10, ge=1)        # official: 1000 (the embedding has class_num rows)
    label_drop_prob: float = Field(0.1, ge=0, lt=1) # class embedding -> fake_latent during training (CFG)
    buffer_size: int = Field(4, ge=1)       # class-embedding slots before the tokens; official 64

    # encoder / decoder (pre-LN ViT blocks, timm naming); official B/L/H 768/1024/1280 wide, 12/16/20 deep.
    # 96 wide, 2 + 2 deep is what 2 CPU cores train to class-correct digits in ~8 minutes.
    encoder_embed_dim: int = Field(96, ge=1)
    encoder_depth: int = Field(2, ge=1)
    encoder_num_heads: int = Field(4, ge=1)
    decoder_embed_dim: int = Field(96, ge=1)
    decoder_depth: int = Field(2, ge=1)     # >= 2 so the entropy block (penultimate) is not the last one
    decoder_num_heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)     # Official 0.1. The tiny run is a few thousand steps on ~1.4k images and is still under-fitting
    # when it stops, so dropout only slows it down; the large presets restore 0.1.
    attn_dropout: float = Field(0.0, ge=0, lt=1)
    proj_dropout: float = Field(0.0, ge=0, lt=1)
    attention: Literal["bidirectional"] = "bidirectional"  # "step_causal" arrives with speculative decoding

    # training masking: ratio ~ truncated N(1.0, 0.25) on [mask_ratio_min, 1], one per batch
    mask_ratio_min: float = 0.7

    # head
    head_type: Literal["diffloss", "drift"] = "diffloss"  # "drift": the Drift-AR 1-NFE decoder (mar_tiny_drift)
    diffloss: DiffLossConfig = Field(default_factory=DiffLossConfig)
    drift_ar: DriftARConfig = Field(default_factory=_tiny_drift_ar)

    sampling: SamplingConfig = Field(default_factory=_tiny_sampling)

    @classmethod
    def migrate(cls, data: dict) -> dict:
        """Configs saved before the drift_ar section kept its decoder and draft at the top level."""
        return move_legacy_keys(data, {"drift": "decoder", "draft": "draft"})

    @property
    def seq_len(self) -> int:
        """L: tokens per image."""
        return (self.img_size // self.patch_size) ** 2

    @property
    def token_dim(self) -> int:
        """c: channels per token."""
        return self.channels * self.patch_size ** 2

    @model_validator(mode="after")
    def _check(self) -> "MARConfig":
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        for name in ("encoder", "decoder"):
            dim, heads = getattr(self, f"{name}_embed_dim"), getattr(self, f"{name}_num_heads")
            if dim % heads:
                raise ValueError(f"{name}_embed_dim {dim} is not divisible by {name}_num_heads {heads}")
        if self.head_type == "drift":
            self.drift_ar.check_draft_kind("MAR", "transformer")
            if self.drift_ar.draft.dim != self.decoder_embed_dim:
                raise ValueError(f"drift_ar.draft.dim ({self.drift_ar.draft.dim}) must equal decoder_embed_dim "
                                 f"({self.decoder_embed_dim}): the draft runs on the target's features z")
        if self.decoder_depth < 1:
            raise ValueError("decoder_depth must be >= 1 (the entropy comes from a decoder block)")
        if not 0.0 < self.mask_ratio_min <= 1.0:
            raise ValueError(f"mask_ratio_min must be in (0, 1], got {self.mask_ratio_min}")
        if not 1 <= self.sampling.num_iter <= self.seq_len:
            raise ValueError(f"sampling.num_iter must be in [1, {self.seq_len}] (one token per step at most "
                             f"L steps), got {self.sampling.num_iter}")
        return self
