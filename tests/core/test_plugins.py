"""Plugin loading: entry points of separately installed distributions, broken plugins, strict mode,
misspelt hooks, and a CLI that never imports torch for --help / plugins."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest

from driftar_core.plugins import DriftarPluginManager

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def installed_site(tmp_path_factory) -> Path:
    """pip-install the example and the broken plugin distributions into a fresh target directory."""
    target = tmp_path_factory.mktemp("site")
    for name in ("example_plugin", "broken_plugin"):
        src = tmp_path_factory.mktemp(name) / name
        subprocess.run(["cp", "-r", str(FIXTURES / name), str(src)], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(target), str(src)], check=True, capture_output=True)
    return target


def run_cli(args: list[str], site: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    e = dict(os.environ, **env)
    if site is not None:
        e["PYTHONPATH"] = f"{site}{os.pathsep}{e.get('PYTHONPATH', '')}"
    code = "import sys; from driftar_core.cli import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=e, timeout=120)


def test_installed_distribution_is_discovered_and_broken_one_reported(installed_site):
    res = run_cli(["plugins", "--json"], installed_site)
    assert res.returncode == 0, res.stderr
    infos = {p["name"]: p for p in json.loads(res.stdout)}
    ex = infos["example"]
    assert ex["status"] == "loaded" and ex["distribution"] == "driftar-example" and ex["version"] == "0.3.1"
    assert ex["contributed"]["datasets"] == ["example_noise"]
    assert ex["hooks"] == ["driftar_register_datasets"]
    broken = infos["broken"]
    assert broken["status"] == "failed" and "broken on purpose" in broken["error"]
    assert "driftar-broken" in res.stderr  # reported by name on stderr
    assert infos["core"]["status"] == "loaded" and "digits" in infos["core"]["contributed"]["datasets"]


def test_strict_mode_reraises(installed_site):
    res = run_cli(["plugins"], installed_site, DRIFTAR_STRICT_PLUGINS="1")
    assert res.returncode != 0
    assert "broken on purpose" in res.stderr and "Traceback" in res.stderr


def test_disable_plugins(installed_site):
    res = run_cli(["plugins", "--json"], installed_site, DRIFTAR_DISABLE_PLUGINS="broken,example")
    names = {p["name"] for p in json.loads(res.stdout)}
    assert "broken" not in names and "example" not in names and "core" in names


def test_misspelt_hook_fails_check_pending():
    pm = DriftarPluginManager()

    class Typo:
        from driftar_core.hookspecs import hookimpl

        @hookimpl
        def driftar_register_backbone(self, register):  # missing "s"
            pass

    pm.register(Typo(), name="typo")
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


def test_help_and_plugins_do_not_import_torch():
    code = ("import sys\nfrom driftar_core.cli import main\n"
            "for args in (['--help'], ['plugins'], ['train', '--help'], ['sample', '--help']):\n"
            "    try:\n        main(args)\n    except SystemExit as e:\n        assert not e.code, (args, e.code)\n"
            "heavy = [m for m in ('torch', 'numpy', 'sklearn') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout, res.stdout
