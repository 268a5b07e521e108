"""The plugin manager: loads ``driftar`` entry points one at a time and fills the registries.

- Built-ins (the core's tokenizers/datasets, MAR, the zoo) are entry points of this repo's own
  distributions, exactly as a third party's would be.
- A plugin that fails to import (``SystemExit`` included), has a misspelt ``driftar_*`` hook, or whose
  hook raises (a name clash included) is recorded with its name, distribution and error, its
  contributions are dropped, and everything else keeps working. ``DRIFTAR_STRICT_PLUGINS=1`` re-raises.
- Built-in distributions load first, so a name clash is charged to the plugin that caused it.
  ``replace=True`` (a deliberate override) and a command that shadows a core command work, with a
  warning on stderr naming the plugin.
- ``DRIFTAR_DISABLE_PLUGINS=a,b`` blocks plugins by entry-point name, ``DRIFTAR_LOAD_PLUGINS=a,b``
  loads only those (empty: none but the core).
- ``check_pending()`` runs after each plugin is registered: a misspelt hook fails that plugin, loudly.

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
        self.isolated: set[str] = set()               # loaded plugins whose hooks raised: left out
        self._registries: Registries | None = None

    # --- loading ------------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        only = os.environ.get("DRIFTAR_LOAD_PLUGINS")
        allowed = None if only is None else {s.strip() for s in only.split(",") if s.strip()} | {CORE_PLUGIN}
        blocked = {s.strip() for s in os.environ.get("DRIFTAR_DISABLE_PLUGINS", "").split(",") if s.strip()}
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=_load_order):
            if (allowed is not None and ep.name not in allowed) or ep.name in blocked:
                self.set_blocked(ep.name)
                continue
            if self.get_plugin(ep.name) is not None or self.is_blocked(ep.name):
                continue
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            try:
                plugin = ep.load()          # SystemExit at import is a failure too, not the end of driftar
                self.register(plugin, name=ep.name)
                self.check_pending()        # a misspelt driftar_* hook: this plugin's, the others passed
            except (Exception, SystemExit) as e:
                if self.get_plugin(ep.name) is not None:
                    self.unregister(name=ep.name)
                self.fail(ep.name, dist, "failed to load", e)
                continue
            self.dists[ep.name] = (dist, version)

    def fail(self, name: str, dist: str, what: str, e: BaseException) -> None:
        """Record a plugin that is skipped, and say so on stderr (``DRIFTAR_STRICT_PLUGINS=1``: re-raise)."""
        if os.environ.get("DRIFTAR_STRICT_PLUGINS", "") not in ("", "0"):
            raise e
        error = f"{type(e).__name__}: {e}"
        self.failures.append(PluginFailure(name, dist, f"{what}: {error}"))
        print(f"driftar: plugin {name!r} (distribution {dist}) {what} and is skipped: {error}. "
              "Set DRIFTAR_STRICT_PLUGINS=1 to see the traceback.", file=sys.stderr)

    def isolate(self, name: str, what: str, e: BaseException) -> None:
        """A loaded plugin whose hook raised: its contributions are dropped everywhere."""
        self.isolated.add(name)
        self.fail(name, self.dists.get(name, ("(registered in process)", ""))[0], what, e)

    def active_impls(self, hook_name: str) -> list[tuple[str, Any]]:
        """(plugin name, implementation function) of a hook in registration order, isolated plugins left out."""
        out = []
        for impl in getattr(self.hook, hook_name).get_hookimpls():     # pluggy keeps them in registration order
            name = self.get_name(impl.plugin) or "?"
            if name not in self.isolated:
                out.append((name, impl.function))
        return out

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
        """Call every plugin's registration hooks with a callback that knows the plugin's name (``driftar
        plugins`` shows each entry's source). A plugin whose hook raises (a name clash included: the
        built-ins register first, so the clash is charged to the later plugin) is isolated and the
        registries are rebuilt without it."""
        while True:
            reg = Registries()
            if self._fill(reg):
                return reg

    def _fill(self, reg: Registries) -> bool:
        """Run the registration hooks into ``reg``; False (and the plugin isolated) when one raised."""
        hooks: list[tuple[str, Any]] = [
            ("driftar_register_tokenizers", lambda src: reg.named_callback(reg.tokenizers, src)),
            ("driftar_register_datasets", lambda src: reg.named_callback(reg.datasets, src)),
            ("driftar_register_heads", lambda src: reg.named_callback(reg.heads, src)),
            ("driftar_register_backbones", reg.backbone_callback),
            ("driftar_register_models", reg.card_callback),
            ("driftar_register_recipes", reg.recipe_callback),
            ("driftar_register_exporters", lambda src: reg.named_callback(reg.exporters, src)),
            ("driftar_register_objectives", lambda src: reg.named_callback(reg.objectives, src)),
        ]
        for hook_name, make_callback in hooks:
            for src, function in self.active_impls(hook_name):
                try:
                    function(make_callback(src))
                except Exception as e:
                    self.isolate(src, f"raised in {hook_name}", e)
                    return False
        return True

    # --- reporting ----------------------------------------------------------------------------
    def describe(self) -> list[PluginInfo]:
        reg = self.registries
        kinds = {"tokenizers": reg.tokenizers, "datasets": reg.datasets, "heads": reg.heads,
                 "backbones": reg.backbones, "models": reg.models, "pretrained": reg.cards,
                 "recipes": reg.recipes, "exporters": reg.exporters, "objectives": reg.objectives}
        infos = []
        for name, plugin in self.list_name_plugin():
            if plugin is None or name in self.isolated:
                continue
            dist, version = self.dists.get(name, ("(registered in process)", ""))
            hooks = sorted(h.name for h in self.get_hookcallers(plugin) or [])
            contributed = {k: [e.name for e in r.entries() if e.source == name] for k, r in kinds.items()}
            infos.append(PluginInfo(name, dist, version, hooks, {k: v for k, v in contributed.items() if v}))
        return infos


# the distributions of this repository load first (core first), so a third party's clash with a
# built-in name is reported against the third party and the built-in stays
BUILTIN_DISTS = ("driftar", "driftar-mar", "driftar-nextstep1", "driftar-transdiff", "driftar-zoo", "driftar-export")


def _load_order(ep: metadata.EntryPoint) -> tuple[int, int, str]:
    dist = ep.dist.name if ep.dist else ""
    return (ep.name != CORE_PLUGIN, dist not in BUILTIN_DISTS, ep.name)


_MANAGER: DriftarPluginManager | None = None


def get_plugin_manager() -> DriftarPluginManager:
    """The process-wide manager, entry points loaded on first use."""
    global _MANAGER
    if _MANAGER is None:
        pm = DriftarPluginManager()
        pm.load_entry_points()
        _MANAGER = pm
    return _MANAGER


def registries() -> Registries:
    """The registries of the default plugin manager (plugins loaded on first use)."""
    return get_plugin_manager().registries


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
