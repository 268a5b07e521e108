"""``run_cli(argv, capsys) -> (exit code, stdout, stderr)``: the driftar command line run in-process, as the
CLI tests of every package call it (tests/ is on sys.path through its conftest)."""
from __future__ import annotations

from driftar_core.cli import main


def run_cli(argv, capsys):
    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err
