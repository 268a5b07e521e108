"""The plugin manager: loads ``driftar`` entry points one at a time and fills the registries.

- Built-ins (the core's tokenizers/datasets, MAR, the zoo) are entry points of this repo's own
  distributions, exactly as a third party's would be.
- A plugin that fails to import is recorded with its name and error; everything else keeps working.
  ``DRIFTAR_STRICT_PLUGINS=1`` re-raises instead. ``DRIFTAR_DISABLE_PLUGINS=a,b`` blocks plugins by
  entry-point name, ``DRIFTAR_LOAD_PLUGINS=a,b`` loads only those (empty: none but the core).
- ``check_pending()`` runs after loading, so a misspelt ``driftar_*`` hook implementation fails loudly.

Nothing here imports torch.
"""
from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from driftar_core import hookspecs
from driftar_core.registry import Registries

ENTRY_POINT_GROUP = "driftar"
CORE_PLUGIN = "core"


@dataclass
class PluginFailure:
    name: str
    dist: str
    error: str


@dataclass
class PluginInfo:
    name: str
    dist: str
    version: str
    hooks: list[str]
    contributed: dict[str, list[str]] = field(default_factory=dict)


class DriftarPluginManager(pluggy.PluginManager):
    """pluggy's manager plus driftar's registries and a record of what failed to load."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.dists: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
        self._registries: Registries | None = None

    # --- loading ------------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        strict = os.environ.get("DRIFTAR_STRICT_PLUGINS", "") not in ("", "0")
        only = os.environ.get("DRIFTAR_LOAD_PLUGINS")
        allowed = None if only is None else {s.strip() for s in only.split(",") if s.strip()} | {CORE_PLUGIN}
        blocked = {s.strip() for s in os.environ.get("DRIFTAR_DISABLE_PLUGINS", "").split(",") if s.strip()}
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name != CORE_PLUGIN, e.name)):
            if (allowed is not None and ep.name not in allowed) or ep.name in blocked:
                self.set_blocked(ep.name)
                continue
            if self.get_plugin(ep.name) is not None or self.is_blocked(ep.name):
                continue
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            try:
                plugin = ep.load()
                self.register(plugin, name=ep.name)
            except Exception as e:
                if strict:
                    raise
                self.failures.append(PluginFailure(ep.name, dist, f"{type(e).__name__}: {e}"))
                print(f"driftar: plugin {ep.name!r} (distribution {dist}) failed to load and is skipped: "
                      f"{type(e).__name__}: {e}. Set DRIFTAR_STRICT_PLUGINS=1 to see the traceback.",
                      file=sys.stderr)
                continue
            self.dists[ep.name] = (dist, version)
        self.check_pending()

    # --- registries ---------------------------------------------------------------------------
    @property
    def registries(self) -> Registries:
        if self._registries is None:
            self._registries = self.build_registries()
        return self._registries

    def reset_registries(self) -> None:
        """Forget the registries; the next access calls the hooks again (after (un)registering plugins)."""
        self._registries = None

    def build_registries(self) -> Registries:
        reg = Registries()
        hooks: list[tuple[str, Any]] = [
            ("driftar_register_tokenizers", lambda src: reg.named_callback(reg.tokenizers, src)),
            ("driftar_register_datasets", lambda src: reg.named_callback(reg.datasets, src)),
            ("driftar_register_heads", lambda src: reg.named_callback(reg.heads, src)),
            ("driftar_register_backbones", reg.backbone_callback),
            ("driftar_register_models", reg.card_callback),
            ("driftar_register_recipes", reg.recipe_callback),
            ("driftar_register_exporters", lambda src: reg.named_callback(reg.exporters, src)),
        ]
        # Call each plugin's implementation with a callback that knows the plugin's name, so every
        # registry entry records its source (``driftar plugins`` shows it).
        for hook_name, make_callback in hooks:
            caller = getattr(self.hook, hook_name)
            for impl in reversed(caller.get_hookimpls()):  # registration order
                src = self.get_name(impl.plugin) or "?"
                impl.function(make_callback(src))
        return reg

    # --- reporting ----------------------------------------------------------------------------
    def describe(self) -> list[PluginInfo]:
        reg = self.registries
        kinds = {"tokenizers": reg.tokenizers, "datasets": reg.datasets, "heads": reg.heads,
                 "backbones": reg.backbones, "models": reg.models, "pretrained": reg.cards,
                 "recipes": reg.recipes, "exporters": reg.exporters}
        infos = []
        for name, plugin in self.list_name_plugin():
            if plugin is None:
                continue
            dist, version = self.dists.get(name, ("(registered in process)", ""))
            hooks = sorted(h.name for h in self.get_hookcallers(plugin) or [])
            contributed = {k: [e.name for e in r.entries() if e.source == name] for k, r in kinds.items()}
            infos.append(PluginInfo(name, dist, version, hooks, {k: v for k, v in contributed.items() if v}))
        return infos


_MANAGER: DriftarPluginManager | None = None


def get_plugin_manager() -> DriftarPluginManager:
    """The process-wide manager, entry points loaded on first use."""
    global _MANAGER
    if _MANAGER is None:
        pm = DriftarPluginManager()
        pm.load_entry_points()
        _MANAGER = pm
    return _MANAGER


def describe_plugins() -> list[dict[str, Any]]:
    """Plugins as plain dicts (``driftar plugins --json``, env.json of every run)."""
    pm = get_plugin_manager()
    out = [{"name": i.name, "distribution": i.dist, "version": i.version, "hooks": i.hooks,
            "contributed": i.contributed, "status": "loaded"} for i in pm.describe()]
    out += [{"name": f.name, "distribution": f.dist, "version": "", "hooks": [], "contributed": {},
             "status": "failed", "error": f.error} for f in pm.failures]
    return out


def format_exception(e: BaseException) -> str:  # pragma: no cover - debugging aid
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))
