"""Registries filled by plugin hooks: models (``arch.tag`` names), backbones, heads, tokenizers,
datasets, recipes, exporters and zoo cards.

Modelled on timm's ``_registry.py``/``_factory.py`` at a fraction of the size: a decorator, ``create``,
``list`` with fnmatch wildcards, ``arch.tag`` names, and an unknown name fails with the closest matches.
Nothing is registered at import time: :func:`registries` loads the plugins once and calls their hooks.
"""
from __future__ import annotations

import difflib
import fnmatch
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that no plugin registered; the message lists the closest matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class DuplicateNameError(ValueError):
    """Two registrations under one name without ``replace=True``."""


def split_model_name_tag(name: str) -> tuple[str, str]:
    """``"mar_tiny.digits"`` -> ``("mar_tiny", "digits")``; no tag -> ``(name, "")``."""
    arch, _, tag = name.partition(".")
    return arch, tag


def _natural_key(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s.lower())]


@dataclass
class Entry(Generic[T]):
    name: str
    value: T
    source: str  # the plugin that registered it


class Registry(Generic[T]):
    """One kind of named thing. ``kind`` appears in error messages ("unknown backbone 'x'")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, value: T, *, replace: bool = False, source: str = "?") -> None:
        if name in self._entries:
            prev = self._entries[name].source
            if not replace:
                raise DuplicateNameError(
                    f"{self.kind} {name!r} is already registered by plugin {prev!r}; "
                    f"pass replace=True to override it on purpose")
            if prev != source:
                print(f"driftar: plugin {source!r} replaces {self.kind} {name!r} registered by plugin {prev!r}",
                      file=sys.stderr)
        self._entries[name] = Entry(name, value, source)

    def get(self, name: str) -> T:
        return self.entry(name).value

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=5, cutoff=0.4)
            hint = f"; did you mean: {', '.join(close)}?" if close else ""
            known = ", ".join(sorted(self._entries, key=_natural_key)) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}{hint} (registered: {known})")
        return self._entries[name]

    def names(self, pattern: str | list[str] = "*", exclude: str | list[str] = ()) -> list[str]:
        pats = [pattern] if isinstance(pattern, str) else list(pattern)
        excl = [exclude] if isinstance(exclude, str) else list(exclude)
        out = [n for n in self._entries if any(fnmatch.fnmatch(n, p) for p in pats)]
        out = [n for n in out if not any(fnmatch.fnmatch(n, p) for p in excl)]
        return sorted(out, key=_natural_key)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class BackboneSpec:
    """What a backbone plugin registers.

    config_cls: pydantic model (extra="forbid") of the whole model: tokenizer, backbone, head and
        sampling defaults. It is the ONE place defaults live.
    build: ``build(config) -> driftar_core.bundle.ModelBundle``; imports torch lazily.
    presets: preset name -> config overrides; ``{name}_{preset}`` becomes a model architecture.
    drift: how Drift-AR applies to this backbone (``driftar_core.interfaces.DriftARSupport``); None = the
        drift recipe does not apply to it.
    graphs: ``(bundle, ExportBounds) -> list[driftar_core.graphs.GraphSpec]``: the graphs of the methods its
        generation calls into the network (``driftar export``); the core adds the decoder's, the
        tokenizer's and a window draft's. None = the backbone does not export.
    """

    name: str
    config_cls: Any
    build: Callable[[Any], Any]
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    drift: Any = None
    graphs: Callable[..., Any] | None = None


LOADS = ("all", "backbone", "all_but_draft")


@dataclass
class RecipeSpec:
    """A training recipe: its TOML file and how it chains with the backbone's other recipes.

    after: the recipe whose finished run this one starts from (``model.init_from``); ``driftar train``
        runs that one first when ``model.init_from`` is unset (Drift-AR starts from a trained baseline).
    loads: what it takes from ``model.init_from``: ``"all"`` (the whole bundle, strictly), ``"backbone"``
        (tokenizer + backbone; then the backbone's declared ``DriftARSupport.init_components`` copies phi
        and the draft from it), ``"all_but_draft"`` (everything but a draft trained afresh).
    then: a recipe ``driftar train`` runs after this one, from its run, when that recipe ``applies``.
    applies: ``(model config) -> bool``: whether the recipe applies to a model (None: always).
    objective: the registered training objective it runs (``driftar_register_objectives``: the core has
        ``baseline``, ``drift`` and ``draft``); None = the objective of the recipe's own name.
    default: ``driftar train --backbone B`` without ``--recipe`` runs this one (at most one per backbone;
        a backbone with a single recipe needs no flag).
    """

    backbone: str
    name: str
    path: Path
    after: str | None = None
    loads: str = "all"
    then: str | None = None
    applies: Callable[[Any], bool] | None = None
    objective: str | None = None
    default: bool = False

    @property
    def objective_name(self) -> str:
        return self.objective or self.name


@dataclass
class ModelArch:
    """A registered architecture: a factory ``(**overrides) -> ModelBundle`` and its backbone."""

    name: str
    backbone: str
    factory: Callable[..., Any]
    preset: dict[str, Any] = field(default_factory=dict)


class Registries:
    """All registries of one plugin manager."""

    def __init__(self) -> None:
        self.tokenizers: Registry[Callable[..., Any]] = Registry("tokenizer")
        self.datasets: Registry[Callable[..., Any]] = Registry("dataset")
        self.heads: Registry[Callable[..., Any]] = Registry("head")
        self.backbones: Registry[BackboneSpec] = Registry("backbone")
        self.models: Registry[ModelArch] = Registry("model")
        self.cards: Registry[Any] = Registry("pretrained model")
        self.recipes: Registry[RecipeSpec] = Registry("recipe")
        self.exporters: Registry[Callable[..., Any]] = Registry("exporter")
        self.objectives: Registry[Callable[..., Any]] = Registry("training objective")

    def recipe_of(self, backbone: str, name: str) -> RecipeSpec:
        """The registered recipe ``backbone/name``, or, for a run whose recipe is not registered (a
        ``--config`` file of its own), an undeclared one: it loads ``"all"`` and runs the objective of its name."""
        key = f"{backbone}/{name}"
        return self.recipes.get(key) if key in self.recipes else RecipeSpec(backbone, name, Path())

    def backbone_recipes(self, backbone: str) -> list[RecipeSpec]:
        return [e.value for e in self.recipes.entries() if e.value.backbone == backbone]

    def default_recipe(self, backbone: str) -> RecipeSpec:
        """What ``driftar train --backbone B`` runs without ``--recipe``: the recipe registered with
        ``default=True``, else the backbone's only recipe; a clear error otherwise."""
        recipes = self.backbone_recipes(backbone)
        chosen = [r for r in recipes if r.default] or (recipes if len(recipes) == 1 else [])
        if not chosen:
            names = ", ".join(r.name for r in recipes) or "none"
            raise UnknownNameError(f"backbone {backbone!r} declares no default recipe; pass --recipe "
                                   f"(registered: {names})")
        return chosen[0]

    # register callbacks handed to the hooks -------------------------------------------------
    def backbone_callback(self, source: str) -> Callable[..., None]:
        def register(spec: BackboneSpec, *, replace: bool = False) -> None:
            self.backbones.register(spec.name, spec, replace=replace, source=source)
            for preset, overrides in spec.presets.items():
                arch = f"{spec.name}_{preset}"
                self.models.register(arch, ModelArch(arch, spec.name, _preset_factory(spec, arch, overrides),
                                                     dict(overrides)), replace=replace, source=source)
        return register

    def card_callback(self, source: str) -> Callable[..., None]:
        def register(card: Any, *, replace: bool = False) -> None:
            self.cards.register(card.name, card, replace=replace, source=source)
        return register

    def recipe_callback(self, source: str) -> Callable[..., None]:
        def register(backbone: str, name: str, path: str | Path, *, after: str | None = None, loads: str = "all",
                     then: str | None = None, applies: Callable[[Any], bool] | None = None,
                     objective: str | None = None, default: bool = False, replace: bool = False) -> None:
            if loads not in LOADS:
                raise ValueError(f"recipe {backbone}/{name}: loads must be one of {LOADS}, got {loads!r}")
            if default:
                taken = [r.name for r in self.backbone_recipes(backbone) if r.default and r.name != name]
                if taken:
                    raise ValueError(f"recipe {backbone}/{name}: {backbone}/{taken[0]} is already the default")
            self.recipes.register(f"{backbone}/{name}", RecipeSpec(backbone, name, Path(path), after, loads, then,
                                                                   applies, objective, default),
                                  replace=replace, source=source)
        return register

    @staticmethod
    def named_callback(reg: Registry[Any], source: str) -> Callable[..., None]:
        def register(name: str, value: Any, *, replace: bool = False) -> None:
            reg.register(name, value, replace=replace, source=source)
        return register


def _preset_factory(spec: BackboneSpec, arch: str, preset: dict[str, Any]) -> Callable[..., Any]:
    def factory(**overrides: Any) -> Any:
        config = resolve_model_config(spec, preset, overrides)
        bundle = spec.build(config)
        bundle.arch = arch
        return bundle
    return factory


def resolve_model_config(spec: BackboneSpec, preset: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """Preset values updated by (nested) overrides, validated by the backbone's config model."""
    from driftar_core.config import deep_update, validate
    return validate(spec.config_cls, deep_update(preset, overrides), where="model")
