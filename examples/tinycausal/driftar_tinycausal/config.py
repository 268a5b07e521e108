"""The whole model's config: the one place its defaults live (pydantic, extra="forbid"). Torch-free."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from driftar_core.config import ModelConfig, SamplingConfig
from driftar_core.method.configs import DriftARConfig, DriftDecoderConfig, LayerDraftConfig, SpeculativeConfig


def _drift_ar() -> DriftARConfig:
    # the drift decoder, a draft of the target's first block, speculative decoding by default
    return DriftARConfig(decoder=DriftDecoderConfig(width=128, depth=2), draft=LayerDraftConfig(depth=1),
                         speculative=SpeculativeConfig(draft_len=3, kappa=0.35))


class TinyCausalConfig(ModelConfig):
    """ModelConfig: partial sub-sections (``drift_ar={"speculative": ...}``) keep these defaults."""

    img_size: int = Field(16, ge=1)          # the bundled digits, upsampled to 16 x 16
    patch_size: int = Field(4, ge=1)         # 4 x 4 patches: L = 16 tokens of c = 16 channels
    class_num: int = Field(10, ge=1)
    width: int = Field(64, ge=1)             # D: the condition z the head sees
    depth: int = Field(3, ge=2)              # >= 2: E comes from the penultimate block
    num_heads: int = Field(4, ge=1)
    label_drop_prob: float = Field(0.1, ge=0, lt=1)   # class -> null class in training (CFG)
    head_type: Literal["flow", "drift"] = "flow"
    flow_steps: int = Field(8, ge=1)         # Euler steps of the baseline flow head (its NFE per token)
    flow_width: int = Field(128, ge=1)
    drift_ar: DriftARConfig = Field(default_factory=_drift_ar)   # used when head_type == "drift"
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(num_iter=16, cfg=1.0,
                                                                            cfg_schedule="constant"))

    @model_validator(mode="after")
    def _check(self) -> "TinyCausalConfig":
        if self.head_type == "drift":
            self.drift_ar.check_draft_kind("tinycausal", "layer")
            if self.drift_ar.draft.depth > self.depth:
                raise ValueError(f"drift_ar.draft.depth ({self.drift_ar.draft.depth}) must not exceed depth ({self.depth})")
        return self

    @property
    def seq_len(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def token_dim(self) -> int:
        return self.patch_size ** 2
