"""The architecture holds: the import-linter contracts of pyproject.toml are kept, and no module of
driftar_core or a built-in plugin takes part in an import cycle (function-level imports included)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contracts_are_kept():
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True, no_logo=True))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def cycles(package: str) -> list[tuple[str, str]]:
    graph = grimp.build_graph(package)
    return sorted({tuple(sorted((m, imp))) for m in graph.modules for imp in graph.find_modules_directly_imported_by(m)
                   if graph.chain_exists(importer=imp, imported=m)})


@pytest.mark.parametrize("package", ["driftar_core", "driftar_mar", "driftar_nextstep1", "driftar_export"])
def test_no_import_cycles(package):
    assert cycles(package) == []


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    """Negative control: a package whose two modules import each other inside functions is caught."""
    pkg = tmp_path / "cyclic_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from cyclic_pkg import b\n")
    (pkg / "b.py").write_text("def g():\n    from cyclic_pkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cycles("cyclic_pkg") == [("cyclic_pkg.a", "cyclic_pkg.b")]
    sys.modules.pop("cyclic_pkg", None)
