"""The MAR plugin: registers the ``mar`` backbone (architectures mar_tiny / mar_base / mar_large /
mar_huge), the ``diffloss`` head and the ``mar/baseline`` recipe through driftar's public hooks
(entry point ``mar`` in the ``driftar`` group), exactly as a third-party plugin would.

Cheap to import: no torch here; networks are built only when a factory is called.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from driftar_core.hookspecs import hookimpl
from driftar_core.interfaces import DriftARSupport
from driftar_core.registry import BackboneSpec
from driftar_mar.config import MARConfig
from driftar_mar.presets import PRESETS

RECIPES = Path(__file__).parent / "recipes"


def init_drift(bundle: Any) -> None:
    """Drift-AR: copy the frozen phi and the draft from the trained target (torch is imported here, lazily)."""
    from driftar_mar.drift import init_drift_components
    init_drift_components(bundle)


def build(config: MARConfig) -> Any:
    """``BackboneSpec.build``: driftar_mar.build.build_mar, imported (with torch) on first call."""
    from driftar_mar.build import build_mar
    return build_mar(config)


def graphs(bundle: Any, bounds: Any) -> Any:
    """``BackboneSpec.graphs``: driftar_mar.graphs.mar_graphs (torch imported on first call)."""
    from driftar_mar.graphs import mar_graphs
    return mar_graphs(bundle, bounds)


def make_head(config: Any, z_dim: int, token_dim: int) -> Any:
    """Head factory ``(config, z_dim, token_dim) -> DiffLoss``; config is a DiffLossConfig or a dict."""
    from driftar_mar.diffloss import make_diffloss
    return make_diffloss(config, z_dim, token_dim)


@hookimpl
def driftar_register_backbones(register: Any) -> None:
    register(BackboneSpec(
        name="mar", config_cls=MARConfig, build=build, presets=PRESETS,
        # masked: the sampler sees the step's image-level E, so training feeds the image mean of E
        drift=DriftARSupport(init_components=init_drift, entropy="image_mean"),
        graphs=graphs,
        description="MAR (Li et al. 2024): random-order masked AR transformer + per-token DDPM head (DiffLoss)"))


@hookimpl
def driftar_register_heads(register: Any) -> None:
    register("diffloss", make_head)


@hookimpl
def driftar_register_recipes(register: Any) -> None:
    register("mar", "baseline", RECIPES / "baseline.toml")
    register("mar", "drift", RECIPES / "drift.toml", after="baseline", loads="backbone", default=True)
