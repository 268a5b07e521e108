"""Shared fixtures: register plugin objects for one test (llm's tests/conftest.py pattern)."""
from __future__ import annotations

import pytest

pytest_plugins = ["nextstep1_fixtures"]   # make_bundle: the tiny randomised NextStep-1 (tests/nextstep1_fixtures.py)


def pytest_configure(config):
    # The suite's models are tiny: on 2 cores, one intra-op thread avoids OpenMP oversubscription
    # (measured: the drift loss on [128, 16, 4] takes 4 ms with 1 thread and 320 ms with 2 threads
    # while another process is busy). Subprocess tests set their own.
    import torch
    torch.set_num_threads(1)


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
