"""A misbehaving plugin is isolated like an import failure: named with its distribution, shown as
failed by ``driftar plugins``, and ``plugins`` / ``models`` / ``sample`` keep working. Built-ins load
first (a clash is charged to the newcomer); deliberate replacement and command shadowing are loud."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_plugins import run_cli  # noqa: F401 (the subprocess CLI runner with a site directory)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("hostile_site")
    src = tmp_path_factory.mktemp("src") / "hostile_plugin"
    subprocess.run(["cp", "-r", str(FIXTURES / "hostile_plugin"), str(src)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(src)], check=True, capture_output=True)
    return target


def still_works(site: Path, plugin: str, tmp_path: Path) -> dict[str, dict]:
    """``plugins --json``, ``models`` and ``sample -c mar_tiny_drift.digits`` with only ``plugin`` added."""
    env = {"DRIFTAR_LOAD_PLUGINS": f"{plugin},mar,nextstep1,zoo,export"}
    res = run_cli(["plugins", "--json"], site, **env)
    assert res.returncode == 0, res.stderr
    infos = {p["name"]: p for p in json.loads(res.stdout)}
    assert {"core", "mar", "zoo"} <= {n for n, p in infos.items() if p["status"] == "loaded"}
    res = run_cli(["models", "mar*"], site, **env)
    assert res.returncode == 0 and "mar_tiny" in res.stdout, res.stderr
    out = tmp_path / f"{plugin}.png"
    res = run_cli(["sample", "-c", "mar_tiny_drift.digits", "-n", "1", "--out", str(out)], site, **env)
    assert res.returncode == 0 and out.is_file(), res.stderr
    return infos


@pytest.mark.parametrize("plugin, error", [
    ("hostile_raise", "raised in driftar_register_datasets: RuntimeError: this hook raises on purpose"),
    ("hostile_typo", "driftar_register_backbone"),
    ("hostile_exit", "SystemExit: this plugin exits at import on purpose"),
    ("hostile_clash", "dataset 'digits' is already registered by plugin 'core'"),
])
def test_a_failing_plugin_is_isolated_and_everything_else_works(hostile_site, tmp_path, plugin, error):
    infos = still_works(hostile_site, plugin, tmp_path)
    failed = infos[plugin]
    assert failed["status"] == "failed" and failed["distribution"] == "driftar-hostile" and error in failed["error"]
    if plugin == "hostile_raise":                        # what it registered before raising is dropped too
        res = run_cli(["plugins", "--json"], hostile_site, DRIFTAR_LOAD_PLUGINS=plugin)
        assert not any("hostile_data" in json.dumps(p["contributed"]) for p in json.loads(res.stdout))


def test_a_replacement_is_allowed_with_a_warning_naming_the_plugin(hostile_site, tmp_path):
    infos = still_works(hostile_site, "hostile_replace", tmp_path)
    assert infos["hostile_replace"]["status"] == "loaded"
    res = run_cli(["plugins"], hostile_site, DRIFTAR_LOAD_PLUGINS="hostile_replace")
    assert "plugin 'hostile_replace' replaces dataset 'digits' registered by plugin 'core'" in res.stderr


def test_a_command_shadowing_a_core_command_is_loud(hostile_site, tmp_path):
    still_works(hostile_site, "hostile_shadow", tmp_path)
    res = run_cli(["zoo"], hostile_site, DRIFTAR_LOAD_PLUGINS="hostile_shadow")
    assert res.returncode == 0 and "hostile zoo" in res.stdout
    assert "plugin 'hostile_shadow' replaces the command 'zoo'" in res.stderr
