"""NextStep1Config: every default of the NextStep-1 model (tokenizer slot, text prompt, LLM, FM head, sampling).

The defaults ARE the tiny CPU model (``nextstep1_tiny``): 16x16 digits cut into 2x2 patches (L = 64
image tokens of c = 4 channels) after a short text prompt ("a handwritten digit three"). The
official NextStep-1-Large sizes are a preset (``driftar_nextstep1.presets``). Sources: NextStep-1
(StepFun 2025, arXiv 2508.10711) and stepfun-ai/NextStep-1 (nextstep/models/modeling_nextstep.py,
modeling_fm_head.py, pipeline_nextstep.py); docs/backbones.md "NextStep-1". Pure pydantic:
importing this module does not import torch.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from driftar_core.config import ModelConfig, SamplingConfig, Strict
from driftar_core.method.configs import (
    DriftARConfig, DriftDecoderConfig, SpeculativeConfig, WindowDraftConfig, move_legacy_keys)


class FlowHeadConfig(Strict):
    """NextStep-1's per-token flow-matching head (``image_head``): SimpleMLPAdaLN, velocity output."""

    width: int = Field(128, ge=1)           # official 1536 (fm_head_dim)
    depth: int = Field(2, ge=1)             # official 12 (fm_head_layers); docs/backbones.md: 2 x 128 tiny
    mlp_ratio: float = Field(1.0, gt=0)     # official 1.0 (unlike MAR's head)
    num_sampling_steps: int = Field(20, ge=2) # N head NFEs per token; signature default 20, examples 50
    timesteps_shift: float = Field(1.0, gt=0) # t' = t / (s - (s - 1) t); 1.0 for text-to-image
    last_step_size: float = Field(0.04, gt=0, lt=1) # the final deterministic Euler step
    batch_mul: int = Field(4, ge=1)         # fm_head_batch_mul: each token repeated with fresh t, noise


def _tiny_sampling() -> SamplingConfig:
    # One token per AR step (num_iter = L = 64), constant CFG as in NextStep's examples (cfg 7.5 on
    # 256 px text-to-image). 1.5 from an FD sweep of the trained nextstep1_tiny.digits (one seed, 359
    # images): cfg 1.0 / 1.5 / 2.0 / 3.0 -> FD 97.5 / 92.2 / 109.8 / 165.0 (recall falls with cfg).
    # NextStep's own "linear" schedule DEcreases with tokens generated; driftar's cfg_at ramps up
    # (MAR/Muse), so the faithful default is "constant".
    return SamplingConfig(num_iter=64, cfg=1.5, cfg_schedule="constant", temperature=1.0)


def _tiny_drift_ar() -> DriftARConfig:
    # Drift-AR (nextstep1_tiny_drift): the 1-NFE decoder replaces the flow head (MAR's tiny drift head,
    # width 128 x 3 blocks, as the probe's). The draft is the core's feature-level window draft
    # ("window": one head call per round, distilled from the finished model by the "draft" recipe), or
    # the target's first layers with their own norm and projectors ("layer": a self-speculative
    # TokenDraft, one head call per drafted token, trained with the drift head by Eq. 3 + entropy
    # alignment). Speculative decoding is the default sampler. Draft length 6 = the window draft's
    # distillation unroll; measured at kappa 0.35 on 10 seeds at batch 1: k = 4 / 6 / 8 -> 4.00 / 5.25 /
    # 5.87 tokens per target pass, 83 / 79 / 92 ms per image (k = 8 drafts past what it learned).
    return DriftARConfig(decoder=DriftDecoderConfig(width=128, depth=3), draft=WindowDraftConfig(),
                         speculative=SpeculativeConfig(draft_len=6))


def _legacy_draft(data: dict) -> dict:
    """The draft of a config saved before ``drift_ar``: ``draft_type`` picked ``draft_layers`` or ``window_draft``."""
    kind, layers, window = data.pop("draft_type", None), data.pop("draft_layers", None), data.pop("window_draft", None)
    if kind == "window":
        data["draft"] = {**(window or {}), "kind": "window"}
    elif kind is not None or layers is not None:
        data["draft"] = {"kind": "layer", **({"depth": layers} if layers is not None else {})}
    return data


class NextStep1Config(ModelConfig):
    """The whole NextStep-1 model. Validated on load; unknown keys fail (extra="forbid")."""

    # tokenizer (the ``patch`` tokenizer; real runs use the f8ch16 VAE latent, 2x2-patchified to c = 64)
    img_size: int = Field(16, ge=1)         # digits upsampled 8 -> 16 (driftar_core/data/digits.py)
    channels: int = Field(1, ge=1)          # grey digits; 16 for the f8ch16 latent
    patch_size: int = Field(2, ge=1)        # 2x2 patches -> L = 64 tokens of c = 4 channels
    token_scale: float = Field(1.0, gt=0)   # tokens = patches * scale (a latent scale slot; 1.0 for pixels)
    # NextStep's use_norm: non-affine LayerNorm over each sampled token's c dims before it is stored
    # and fed back. It matches the channel-normalised f8ch16 latent, whose encoder already
    # LayerNorms every token. driftar applies it to the training tokens as well (the tokenizer's
    # encode), so the head learns in that space. Off for pixel patches: LayerNorm over 4 pixels
    # throws away each patch's brightness and contrast, which no decoder can restore.
    use_norm: bool = False

    # text conditioning: class k -> the prompt "a handwritten digit <name k>" (driftar_nextstep1.text)
    class_num: int = Field(10, ge=1)        # classes with a prompt (the digits)
    prompt_drop_prob: float = Field(0.1, ge=0, lt=1) # prompt -> empty (negative) prompt in training (CFG)
    # Gaussian noise on the image tokens FED to the LLM in training (targets stay clean): robustness to
    # its own sampled tokens. A driftar addition for pixel tokens, in the role of NextStep-1's
    # noise-regularised tokenizer (its latents are trained under noise). Without it the tiny model,
    # trained 3000 steps, turned ~0.1 token errors into noise within a few rows (temperature 0 gave
    # digits, 0.6 and 1.0 did not). Official: 0 (the large preset).
    input_noise_std: float = Field(0.2, ge=0)
    vocab_size: int | None = None       # None = the word tokenizer's size; official ~152k (Qwen2.5)

    # the decoder-only LLM (Qwen2.5-style Llama modules)
    hidden_size: int = Field(128, ge=1)     # official 5120
    num_hidden_layers: int = Field(4, ge=1) # official 48
    num_attention_heads: int = Field(4, ge=1) # official 40
    num_key_value_heads: int = Field(2, ge=1) # GQA; official 8
    intermediate_size: int = Field(352, ge=1) # SwiGLU width, ~8/3 H; official 13824
    rms_norm_eps: float = Field(1e-5, gt=0) # official
    rope_theta: float = Field(10000.0, gt=0) # Qwen2.5 uses 1e6 for 131k positions; ~75 here
    attention_bias: bool = True         # q/k/v biases (official)
    o_attention_bias: bool = False      # no o_proj bias (official)
    initializer_range: float = Field(0.02, ge=0) # N(0, 0.02) Linear/Embedding init (HF PreTrainedModel)
    use_gen_pos_embed: bool = False     # add the 2-D sin-cos table to z (official default False)
    gen_pos_embed_grid: int | None = None  # grid of that table; None = the token grid; official 32

    # loss = lm_loss_weight * text CE (aux_loss) + 1.0 * flow loss (the objective's head loss)
    lm_loss_weight: float = Field(0.01, ge=0)

    head: FlowHeadConfig = Field(default_factory=FlowHeadConfig)
    sampling: SamplingConfig = Field(default_factory=_tiny_sampling)

    head_type: Literal["flow", "drift"] = "flow"   # "drift": Drift-AR's 1-NFE decoder (nextstep1_tiny_drift)
    drift_ar: DriftARConfig = Field(default_factory=_tiny_drift_ar)

    @classmethod
    def migrate(cls, data: dict) -> dict:
        """Configs saved before the drift_ar section kept its decoder, draft and speculative settings at the
        top level (``draft_type`` picking ``draft_layers`` or ``window_draft``)."""
        if {"draft_type", "draft_layers", "window_draft"} & set(data):
            data = _legacy_draft(data)
        return move_legacy_keys(data, {"drift": "decoder", "draft": "draft", "speculative": "speculative"})


    @property
    def grid(self) -> int:
        """Token grid side (H / p)."""
        return self.img_size // self.patch_size

    @property
    def seq_len(self) -> int:
        """L: image tokens per image."""
        return self.grid ** 2

    @property
    def token_dim(self) -> int:
        """c: channels per token."""
        return self.channels * self.patch_size ** 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @model_validator(mode="after")
    def _check(self) -> "NextStep1Config":
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {self.num_key_value_heads} (grouped-query attention)")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even (RoPE rotates pairs)")
        if self.num_hidden_layers < 1:
            raise ValueError("num_hidden_layers must be >= 1")
        if self.head_type == "drift":
            self.drift_ar.check_draft_kind("NextStep-1", "layer", "window")
            draft = self.drift_ar.draft
            if draft.kind == "layer" and draft.depth > self.num_hidden_layers:
                raise ValueError(f"drift_ar.draft.depth ({draft.depth}) must not exceed num_hidden_layers "
                                 f"({self.num_hidden_layers}): the layer draft is the target's first layers")
        if self.sampling.num_iter != self.seq_len:
            raise ValueError(f"NextStep-1 generates one token per AR step: sampling.num_iter must equal "
                             f"L = {self.seq_len}, got {self.sampling.num_iter}")
        return self
