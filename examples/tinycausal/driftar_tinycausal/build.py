"""``build(config) -> ModelBundle``: the flow-head baseline, or the Drift-AR model (drift decoder, draft, phi)."""
from __future__ import annotations

from driftar_core.bundle import ModelBundle
from driftar_core.method.configs import SamplerSpec
from driftar_core.plugins import registries

from driftar_tinycausal.config import TinyCausalConfig
from driftar_tinycausal.head import FlowHead
from driftar_tinycausal.model import FeatureMap, TinyCausal, TinyDraft


def build(config: TinyCausalConfig) -> ModelBundle:
    reg = registries()                      # the core's patch tokenizer and drift decoder, by registry name
    tokenizer = reg.tokenizers.get("patch")(image_size=config.img_size, channels=1, patch_size=config.patch_size)
    backbone = TinyCausal(config)
    if config.head_type == "flow":
        head = FlowHead(config.token_dim, config.width, config.flow_width, config.flow_steps)
        return ModelBundle(tokenizer, backbone, head, config, backbone_name="tinycausal")
    head = reg.heads.get("drift")(config.drift, config.width, config.token_dim)
    phi = FeatureMap(backbone)
    head.set_feature_map(phi)
    return ModelBundle(tokenizer, backbone, head, config, backbone_name="tinycausal", draft=TinyDraft(config),
                       phi=phi, sampler=SamplerSpec.from_config(config.speculative))


def init_drift_components(bundle: ModelBundle) -> None:
    """DriftARSupport.init_components: phi and the draft from the trained target just loaded."""
    bundle.phi.copy_from(bundle.backbone)
    bundle.draft.init_from_target(bundle.backbone)
