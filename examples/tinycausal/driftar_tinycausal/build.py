"""``build(config) -> ModelBundle``: the flow-head baseline, or the Drift-AR model (drift decoder, draft, phi)."""
from __future__ import annotations

from driftar_core.bundle import ModelBundle
from driftar_core.method.assemble import drift_ar_bundle
from driftar_core.plugins import registries

from driftar_tinycausal.config import TinyCausalConfig
from driftar_tinycausal.head import FlowHead
from driftar_tinycausal.model import FeatureMap, TinyCausal, TinyDraft


def build(config: TinyCausalConfig) -> ModelBundle:
    reg = registries()                      # the core's patch tokenizer, by registry name
    tokenizer = reg.tokenizers.get("patch")(image_size=config.img_size, channels=1, patch_size=config.patch_size)
    backbone = TinyCausal(config)
    if config.head_type == "flow":
        head = FlowHead(config.token_dim, config.width, config.flow_width, config.flow_steps)
        return ModelBundle(tokenizer, backbone, head, config, backbone_name="tinycausal")
    # the core assembles the drift decoder (phi in its loss), the default sampler and the bundle
    return drift_ar_bundle(config, config.drift_ar, tokenizer, backbone, backbone_name="tinycausal",
                           phi=FeatureMap(backbone), draft=TinyDraft(config))


def init_drift_components(bundle: ModelBundle) -> None:
    """DriftARSupport.init_components: phi and the draft from the trained target just loaded."""
    bundle.phi.copy_from(bundle.backbone)
    bundle.draft.init_from_target(bundle.backbone)
