"""``drift_ar_bundle``: a backbone's Drift-AR model, assembled from its ``drift_ar`` config section.

What every Drift-AR model shares is built here, once: the 1-NFE drift decoder over the backbone's
condition z (width ``z_dim``) with the frozen feature map phi installed in its loss, the window draft
when the section asks for one, and the default sampler declared as data (speculative when the
section has enabled speculative settings). What only the backbone knows it passes in: phi (its own
token path, docs/method.md "Drift loss") and a draft of the kind only it can build (the transformer draft over
its blocks, or its first layers). docs/plugins.md "Drift-AR" shows a plugin's ``build`` calling this.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from driftar_core.bundle import ModelBundle
from driftar_core.method.configs import DriftARConfig, SamplerSpec, WindowDraftConfig
from driftar_core.method.drift_decoder import DriftDecoder


def drift_ar_bundle(config: Any, section: DriftARConfig, tokenizer: Any, backbone: nn.Module, *,
                    backbone_name: str, phi: nn.Module, draft: nn.Module | None = None) -> ModelBundle:
    """The Drift-AR bundle of ``backbone`` (any ARBackbone with ``z_dim``; tokens ``tokenizer.token_shape``
    = (L, c)). ``draft``: the backbone's own draft for ``section.draft`` (kind "transformer" or
    "layer"); a "window" draft is the core's and built here."""
    seq_len, token_dim = tokenizer.token_shape
    head = DriftDecoder(token_dim, backbone.z_dim, section.decoder)
    head.set_feature_map(phi)
    if isinstance(section.draft, WindowDraftConfig):
        from driftar_core.method.window_draft import WindowDraft
        if draft is not None:
            raise ValueError(f"{backbone_name}: a window draft is built by the core; pass no draft for it")
        draft = WindowDraft(backbone.z_dim, token_dim, seq_len, section.draft)
    elif draft is None:
        raise ValueError(f"{backbone_name}: drift_ar.draft.kind {section.draft.kind!r} needs the backbone's "
                         "own draft (build it and pass draft=...)")
    return ModelBundle(tokenizer, backbone, head, config, backbone_name=backbone_name, draft=draft, phi=phi,
                       sampler=SamplerSpec.from_config(section.speculative))
