"""Build a MAR model bundle: patch tokenizer + MAR backbone + DiffLoss head (untrained weights).

Size presets live in ``driftar_mar.presets`` (torch-free, so the plugin registers them cheaply).
"""
from __future__ import annotations

from driftar_core.bundle import ModelBundle
from driftar_core.tokenizers.patch import PatchTokenizer
from driftar_mar.config import MARConfig
from driftar_mar.diffloss import DiffLoss
from driftar_mar.mar import MAR
from driftar_mar.presets import PRESETS  # noqa: F401  (re-exported: build_mar(MARConfig(**PRESETS[name])))


def build_mar(config: MARConfig) -> ModelBundle:
    """config -> ModelBundle(tokenizer=patch, backbone=MAR, head=DiffLoss), backbone_name "mar"."""
    tokenizer = PatchTokenizer(config.img_size, config.channels, config.patch_size, config.token_scale)
    backbone = MAR(config)
    if config.head_type == "drift":
        return build_mar_drift(config, tokenizer, backbone)
    head = DiffLoss(config.diffloss, z_dim=backbone.z_dim, token_dim=config.token_dim)
    return ModelBundle(tokenizer, backbone, head, config, backbone_name="mar")


def build_mar_drift(config: MARConfig, tokenizer: PatchTokenizer, backbone: MAR) -> ModelBundle:
    """Drift-AR MAR: the same backbone, the 1-NFE drift decoder, the draft and the frozen phi."""
    from driftar_core.method.draft import DraftModel
    from driftar_core.method.drift_decoder import DriftDecoder
    from driftar_mar.drift import MARFeatureMap
    head = DriftDecoder(config.token_dim, backbone.z_dim, config.drift)
    phi = MARFeatureMap(backbone)               # frozen; filled from the trained target (init_drift_components)
    head.set_feature_map(phi)
    return ModelBundle(tokenizer, backbone, head, config, backbone_name="mar", draft=DraftModel(config.draft), phi=phi)
