"""Build a NextStep-1 bundle (tokenizer + backbone + flow head), a layer-copy draft, and the official key map.

Size presets live in ``driftar_nextstep1.presets`` (torch-free, so the plugin registers them cheaply).
"""
from __future__ import annotations

import copy

from torch import Tensor, nn

from driftar_core.bundle import ModelBundle
from driftar_core.tokenizers.patch import PatchTokenizer
from driftar_nextstep1.config import NextStep1Config
from driftar_nextstep1.flow_head import FlowMatchingHead
from driftar_nextstep1.nextstep import NextStep1, token_layer_norm


class TokenNormTokenizer(nn.Module):
    """A tokenizer whose tokens are LayerNormed per token (NextStep's channel-normalised latent, use_norm).

    decode() cannot undo the normalisation: it decodes the normalised tokens, as NextStep's VAE decoder
    does with its normalised latents. For pixel patches that loses each patch's brightness and
    contrast, which is why ``use_norm`` is off on the digits.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.token_shape, self.image_shape = inner.token_shape, inner.image_shape

    def encode(self, images: Tensor) -> Tensor:
        return token_layer_norm(self.inner.encode(images))

    def decode(self, tokens: Tensor) -> Tensor:
        return self.inner.decode(tokens)


def build_nextstep1(config: NextStep1Config) -> ModelBundle:
    """config -> ModelBundle(tokenizer=patch, backbone=NextStep1, head=FlowMatchingHead), backbone "nextstep1"."""
    tokenizer: nn.Module = PatchTokenizer(config.img_size, config.channels, config.patch_size, config.token_scale)
    if config.use_norm:
        tokenizer = TokenNormTokenizer(tokenizer)
    backbone = NextStep1(config)
    if config.head_type == "drift":
        return build_nextstep1_drift(config, tokenizer, backbone)
    head = FlowMatchingHead(config.head, z_dim=backbone.z_dim, token_dim=config.token_dim)
    return ModelBundle(tokenizer, backbone, head, config, backbone_name="nextstep1")


def build_nextstep1_drift(config: NextStep1Config, tokenizer: nn.Module, backbone: NextStep1) -> ModelBundle:
    """Drift-AR NextStep-1: the same LLM, the 1-NFE drift decoder, the draft (``config.drift_ar.draft``:
    the layer draft built here, or the core's window draft) and the frozen phi. Speculative decoding
    with ``config.drift_ar.speculative`` is the bundle's default sampler (``driftar sample``, ``eval``
    and ``bench`` use it unless told ``--no-speculative``)."""
    from driftar_core.method.assemble import drift_ar_bundle
    from driftar_nextstep1.drift import NextStep1Draft, NextStep1FeatureMap
    draft = NextStep1Draft.for_target(config) if config.drift_ar.draft.kind == "layer" else None
    return drift_ar_bundle(config, config.drift_ar, tokenizer, backbone, backbone_name="nextstep1",
                           phi=NextStep1FeatureMap(backbone), draft=draft)


def build_layer_draft(target: NextStep1, num_layers: int) -> NextStep1:
    """A self-speculative draft: the target's first ``num_layers`` layers with its embeddings, final norm,
    lm_head and projectors, copied (not shared). It maps the committed tokens to z_draft with its own KV
    cache; the bundle's head turns z_draft into a drafted token. num_layers = depth gives an exact copy."""
    if not 1 <= num_layers <= target.config.num_hidden_layers:
        raise ValueError(f"num_layers must be in [1, {target.config.num_hidden_layers}], got {num_layers}")
    draft = copy.deepcopy(target)
    draft.layers = draft.layers[:num_layers]
    draft.config = target.config.model_copy(update={"num_hidden_layers": num_layers})
    draft.entropy_layer = max(num_layers - 2, 0)
    return draft


def official_key(key: str) -> str:
    """An official NextStep-1 checkpoint key -> the bundle's key (``image_head.`` -> ``head.``, else ``backbone.``)."""
    if key.startswith("image_head."):
        return "head." + key[len("image_head."):]
    return "backbone." + key
