"""Shared fixtures: register plugin objects for one test (llm's tests/conftest.py pattern)."""
from __future__ import annotations

import pytest


@pytest.fixture
def register_plugin():
    """``register_plugin(obj, name)`` registers a plugin object on the default manager for one test."""
    from driftar_core.plugins import get_plugin_manager
    pm = get_plugin_manager()
    names: list[str] = []

    def _register(obj, name: str):
        pm.register(obj, name=name)
        names.append(name)
        pm.reset_registries()
        return pm

    yield _register
    for n in names:
        pm.unregister(name=n)
    pm.reset_registries()
