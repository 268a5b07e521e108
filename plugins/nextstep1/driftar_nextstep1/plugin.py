"""The NextStep-1 plugin: registers the ``nextstep1`` backbone (architectures nextstep1_tiny,
nextstep1_tiny_drift, nextstep1_large), the ``flow_matching`` head and the ``nextstep1/baseline`` and
``nextstep1/drift`` recipes through driftar's public hooks (entry point ``nextstep1`` in the
``driftar`` group), exactly as a third-party plugin would.

Cheap to import: no torch here; networks are built only when a factory is called.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from driftar_core.hookspecs import hookimpl
from driftar_core.interfaces import DriftARSupport
from driftar_core.registry import BackboneSpec
from driftar_nextstep1.config import NextStep1Config
from driftar_nextstep1.presets import PRESETS

RECIPES = Path(__file__).parent / "recipes"


def init_drift(bundle: Any) -> None:
    """Drift-AR: copy the frozen phi and the draft from the trained target (torch is imported here, lazily)."""
    from driftar_nextstep1.drift import init_drift_components
    init_drift_components(bundle)


def build(config: NextStep1Config) -> Any:
    """``BackboneSpec.build``: driftar_nextstep1.build.build_nextstep1, imported (with torch) on first call."""
    from driftar_nextstep1.build import build_nextstep1
    return build_nextstep1(config)


def graphs(bundle: Any, bounds: Any) -> Any:
    """``BackboneSpec.graphs``: driftar_nextstep1.graphs.nextstep1_graphs (torch imported on first call)."""
    from driftar_nextstep1.graphs import nextstep1_graphs
    return nextstep1_graphs(bundle, bounds)


def make_head(config: Any, z_dim: int, token_dim: int) -> Any:
    """Head factory ``(config, z_dim, token_dim) -> FlowMatchingHead``; config is a FlowHeadConfig or a dict."""
    from driftar_nextstep1.flow_head import make_flow_head
    return make_flow_head(config, z_dim, token_dim)


@hookimpl
def driftar_register_backbones(register: Any) -> None:
    register(BackboneSpec(
        name="nextstep1", config_cls=NextStep1Config, build=build, presets=PRESETS,
        # causal: no image-level E exists while decoding, so the drift head sees each token's own E;
        # the layer draft re-reads the tokens and prompts the target consumed
        drift=DriftARSupport(init_components=init_drift, entropy="token", draft_inputs=True),
        graphs=graphs,
        description="NextStep-1 (StepFun 2025): causal LLM over text + continuous image tokens, KV-cached "
                    "raster decoding, per-token flow-matching head"))


@hookimpl
def driftar_register_heads(register: Any) -> None:
    register("flow_matching", make_head)


@hookimpl
def driftar_register_recipes(register: Any) -> None:
    register("nextstep1", "baseline", RECIPES / "baseline.toml")
    # Drift-AR from the trained baseline's backbone; then, for a window draft, its distillation from the
    # finished Drift-AR model (the layer draft trains inside the drift recipe)
    register("nextstep1", "drift", RECIPES / "drift.toml", after="baseline", loads="backbone", then="draft",
             default=True)
    register("nextstep1", "draft", RECIPES / "draft.toml", after="drift", loads="all_but_draft",
             applies=uses_window_draft)


def uses_window_draft(config: Any) -> bool:
    """The draft recipe distils a window draft; a layer draft is trained by the drift recipe itself."""
    return config.drift_ar.draft.kind == "window"
