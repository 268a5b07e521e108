"""MAR size presets (DiT-style table; docs/backbones.md "MAR: sizes"). Pure Python, no torch.

``tiny`` is the MARConfig defaults (digits on 2 CPU cores). ``base`` / ``large`` / ``huge`` are the
paper's MAR-B/L/H with the official module shapes, so the state dict equals the released
``model_ema`` (``diffloss.`` renamed ``head.``, the rest under ``backbone.``). The token grid of the
256 px ImageNet model, 16 x 16 tokens of 16 channels, is written as a 16x16x16 "latent image" with
patch_size 1 and the KL-16 latent scale 0.2325: real runs encode images with the KL-16 VAE
tokenizer (not built yet), which produces exactly those tokens.
"""
from __future__ import annotations

from typing import Any


def paper_preset(dim: int, depth: int, heads: int, head_depth: int, head_width: int, cfg: float) -> dict[str, Any]:
    """MAR-{B,L,H} at 256 px: KL-16 token grid, buffer 64, dropout 0.1, README eval sampling (K=256, linear CFG)."""
    return {
        "img_size": 16, "channels": 16, "patch_size": 1, "token_scale": 0.2325,
        "class_num": 1000, "buffer_size": 64,
        "encoder_embed_dim": dim, "encoder_depth": depth, "encoder_num_heads": heads,
        "decoder_embed_dim": dim, "decoder_depth": depth, "decoder_num_heads": heads,
        "attn_dropout": 0.1, "proj_dropout": 0.1,
        "diffloss": {"depth": head_depth, "width": head_width, "clip_x0": None},  # MAR: no clipping
        "sampling": {"num_iter": 256, "cfg": cfg, "cfg_schedule": "linear", "temperature": 1.0},
    }


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},                                           # the MARConfig defaults
    # Drift-AR: same backbone, 1-NFE drift decoder + draft. Temperature (the decoder's eps scale) 1.2 from an
    # FD sweep of cfg {2, 3, 4} x temperature {1.0, 1.2, 1.4} (BENCHMARKS.md); the DDPM baseline's best is 1.0.
    "tiny_drift": {"head_type": "drift", "sampling": {"temperature": 1.2}},
    "base": paper_preset(768, 12, 12, 6, 1024, 2.9),      # MAR-B, 207.9M params
    "large": paper_preset(1024, 16, 16, 8, 1280, 3.0),    # MAR-L, 478.3M
    "huge": paper_preset(1280, 20, 16, 12, 1536, 3.2),    # MAR-H, 942.4M
}
