"""driftar core: interfaces, plugin manager, registry, configs, the Drift-AR method, sampling, training.

The public registry API is re-exported lazily so that importing the package does not import torch.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "register_model", "is_model", "load_bundle"]


def __getattr__(name: str) -> Any:
    if name in ("create_model", "list_models", "register_model", "is_model"):
        from driftar_core import factory
        return getattr(factory, name)
    if name == "load_bundle":
        from driftar_core.bundle import load_bundle
        return load_bundle
    raise AttributeError(f"module 'driftar_core' has no attribute {name!r}")
