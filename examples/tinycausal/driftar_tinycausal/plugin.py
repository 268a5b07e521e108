"""The plugin: registers the backbone (with its Drift-AR support declared) and its recipes. Torch-free."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from driftar_core.hookspecs import hookimpl
from driftar_core.interfaces import DriftARSupport
from driftar_core.registry import BackboneSpec

from driftar_tinycausal.config import TinyCausalConfig

RECIPES = Path(__file__).parent / "recipes"
PRESETS = {"tiny": {}, "tiny_drift": {"head_type": "drift"}}


def build(config: TinyCausalConfig) -> Any:
    from driftar_tinycausal.build import build as build_bundle
    return build_bundle(config)


def graphs(bundle: Any, bounds: Any) -> Any:
    from driftar_tinycausal.graphs import graphs as export_graphs
    return export_graphs(bundle, bounds)


def init_drift(bundle: Any) -> None:
    from driftar_tinycausal.build import init_drift_components
    init_drift_components(bundle)


@hookimpl
def driftar_register_backbones(register: Any) -> None:
    register(BackboneSpec(
        name="tinycausal", config_cls=TinyCausalConfig, build=build, presets=PRESETS,
        description="example third-party backbone: a tiny causal transformer with a flow head",
        drift=DriftARSupport(init_components=init_drift, entropy="token", draft_inputs=True),
        graphs=graphs))


@hookimpl
def driftar_register_recipes(register: Any) -> None:
    register("tinycausal", "baseline", RECIPES / "baseline.toml")
    register("tinycausal", "drift", RECIPES / "drift.toml", after="baseline", loads="backbone", default=True)
