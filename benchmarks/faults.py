#!/usr/bin/env python
"""Fault-injection sweep of the ``driftar`` CLI: bad inputs, corrupted artifacts, kills, concurrent writers.

Each attempt runs the CLI in a fresh temp directory (the project is never the cwd) and is classified
as ``ok``, ``clear error``, ``unclear error``, ``traceback``, ``silent wrong result``, ``data loss``,
``leftover files`` or ``hang`` (rules: ``faults/classify.py:classify``). The cases are data
(``faults/cases*.py``); the runner is ``faults/runner.py``.

    python benchmarks/faults.py --list
    python benchmarks/faults.py --jobs 2 --markdown faults.md --json faults.json
    python benchmarks/faults.py --only 'bundle.*' --only 'kill.*'
    python benchmarks/faults.py --strict          # exit 1 when any defect remains

The exit code is 0 (it is a report) unless ``--strict`` is given.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # the faults/ package beside this file

from faults.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
