"""The timm-like model API over the registries: ``create_model``, ``list_models``, ``is_model``,
``register_model`` (timm's ``_factory.py`` / ``_registry.py`` public functions)."""
from __future__ import annotations

from typing import Any, Callable

from driftar_core.plugins import registries
from driftar_core.registry import ModelArch, UnknownNameError, split_model_name_tag


def register_model(fn: Callable[..., Any] | None = None, *, name: str | None = None, backbone: str = "custom",
                   replace: bool = False) -> Any:
    """Register a model factory ``fn(**overrides) -> ModelBundle``; usable as a decorator."""
    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        n = name or f.__name__
        registries().models.register(n, ModelArch(n, backbone, f), replace=replace, source="register_model")
        return f
    return deco(fn) if fn is not None else deco


def list_models(pattern: str | list[str] = "*", exclude: str | list[str] = (), pretrained: bool = False) -> list[str]:
    """Architectures matching fnmatch ``pattern``; with ``pretrained=True`` the ``arch.tag`` names with weights."""
    reg = registries()
    if pretrained:
        return reg.cards.names(pattern, exclude)
    return reg.models.names(pattern, exclude)


def is_model(name: str) -> bool:
    reg = registries()
    return name in reg.cards or split_model_name_tag(name)[0] in reg.models


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> Any:
    """Build a model bundle by architecture (``mar_tiny``) or pretrained name (``mar_tiny.digits``).

    ``pretrained=True`` (or any name with a tag) loads the zoo weights from local disk, offline.
    """
    reg = registries()
    arch, tag = split_model_name_tag(name)
    if tag or pretrained:
        if not tag:
            tags = reg.cards.names(f"{arch}.*")
            if not tags:
                known = ", ".join(reg.cards.names()) or "none"
                raise UnknownNameError(f"no pretrained weights for {arch!r} (pretrained models: {known})")
            name = tags[0]
        from driftar_core.pretrained import load_pretrained
        return load_pretrained(reg.cards.get(name), **overrides)
    return reg.models.get(arch).factory(**overrides)
