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
    """Drift-AR MAR: the same backbone, the 1-NFE drift decoder, the transformer draft over its decoder
    features and the frozen phi (both filled from the trained target by ``init_drift_components``)."""
    from driftar_core.method.assemble import drift_ar_bundle
    from driftar_core.method.draft import DraftModel
    from driftar_mar.drift import MARFeatureMap
    return drift_ar_bundle(config, config.drift_ar, tokenizer, backbone, backbone_name="mar",
                           phi=MARFeatureMap(backbone), draft=DraftModel(config.drift_ar.draft))
