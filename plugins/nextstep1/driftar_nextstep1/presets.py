"""NextStep-1 size presets (DiT-style table; docs/backbones.md "NextStep-1: architecture"). Pure Python, no torch.

``tiny`` is the NextStep1Config defaults (digits on 2 CPU cores; docs/backbones.md "NextStep-1": a 2-4 layer GQA
decoder of width 64-128, a 2 x 128 head, N = 5-20 steps). ``large`` is NextStep-1-Large with the
official module shapes (Qwen2.5-14B-derived LLM, 157M flow head), so its state dict has the official
keys and shapes: build it on the meta device (``with torch.device("meta")``), it has ~14B parameters.
Its image tokens are the f8ch16 latent of a 256 px image (32 x 32 x 16) 2x2-patchified to 256 tokens
of c = 64, written as a 16-channel "latent image" for the patch tokenizer; real runs need the
NextStep VAE tokenizer (not built). vocab_size and rope_theta are Qwen2.5-14B's config values
(docs/backbones.md marks the vocabulary as inferred: verify against the checkpoint's config.json).
"""
from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},                                            # the NextStep1Config defaults
    # Drift-AR: same LLM, 1-NFE drift decoder, window draft (NextStep1Config.drift_ar). Temperature (the decoder's eps scale) 1.6 from an
    # FD sweep of the trained model (seed 0, CFG 1.5): 0.8 / 1.0 / 1.2 / 1.4 / 1.6 / 1.8 -> 150.8 / 112.7 /
    # 85.5 / 63.0 / 49.6 / 48.3 (precision 0.85 at 1.6, 0.79 at 1.8); the flow baseline is best at 1.0.
    "tiny_drift": {"head_type": "drift", "sampling": {"temperature": 1.6}},
    "large": {                                             # NextStep-1-Large, 256 px
        "img_size": 32, "channels": 16, "patch_size": 2, "use_norm": True, "input_noise_std": 0.0,
        "vocab_size": 152064, "hidden_size": 5120, "num_hidden_layers": 48, "num_attention_heads": 40,
        "num_key_value_heads": 8, "intermediate_size": 13824, "rms_norm_eps": 1e-5, "rope_theta": 1e6,
        "gen_pos_embed_grid": 32,                          # the official buffer is always 32 x 32
        "head": {"width": 1536, "depth": 12, "mlp_ratio": 1.0, "num_sampling_steps": 50},
        "sampling": {"num_iter": 256, "cfg": 7.5, "cfg_schedule": "constant", "temperature": 1.0},
    },
}
